//! The layers' response body.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body::Body;
//! use http_body_util::{BodyExt, Full};
//! use scopegate::body::ResponseBody;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // What the inner service answered passes through untouched.
//! let body = ResponseBody::new(Full::new(Bytes::from_static(b"hello")));
//! assert_eq!(body.size_hint().exact(), Some(5));
//! assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
//! # }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of [`ScopeLayer`](crate::layer::ScopeLayer) and
    /// [`EntitlementLayer`](crate::layer::EntitlementLayer): the inner service's body,
    /// or the bytes of a rejection.
    ///
    /// No `Default` bound on `B`, no boxing. See the [module docs](crate::body)
    /// for an example.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Error { bytes: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub fn new(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn error(bytes: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Error { bytes: Some(bytes) },
        }
    }

    /// No body at all: `is_end_stream` from the start, so a gRPC rejection
    /// goes out as a trailers-only response (one HEADERS frame).
    pub(crate) fn empty() -> Self {
        ResponseBody {
            kind: Kind::Error { bytes: None },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Error { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Error { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Error { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    #[tokio::test]
    async fn error_body_yields_its_bytes_once() {
        let mut body = ResponseBody::<Empty<Bytes>>::error(Bytes::from_static(b"{}"));
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(2));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "{}");
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn inner_body_is_forwarded() {
        let body = ResponseBody::new(Empty::<Bytes>::new());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.collect().await.unwrap().to_bytes().is_empty());
    }
}
