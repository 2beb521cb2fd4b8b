//! `examples/grpc` over loopback with a real tonic client: every rejection
//! arrives as the right gRPC status with the documented message, and a good
//! token gets through.

#[allow(dead_code)]
#[path = "../examples/grpc/main.rs"]
mod example;

use std::net::SocketAddr;

use example::pb::contacts_client::ContactsClient;
use example::pb::{CreateContactRequest, ListContactsRequest};
use tonic::transport::Channel;
use tonic::{Code, Request};

async fn client() -> ContactsClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { example::serve(listener).await.unwrap() });
    ContactsClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn with_token<T>(message: T, authorization: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

fn list(authorization: Option<&str>) -> Request<ListContactsRequest> {
    with_token(ListContactsRequest {}, authorization)
}

fn create(authorization: Option<&str>) -> Request<CreateContactRequest> {
    let contact = CreateContactRequest {
        name: "Grace Hopper".into(),
        email: "grace@example.com".into(),
    };
    with_token(contact, authorization)
}

#[tokio::test]
async fn good_tokens_get_through() {
    let mut client = client().await;
    let listed = client
        .list_contacts(list(Some("Bearer ohk_demo_all_scopes")))
        .await
        .unwrap();
    assert_eq!(listed.get_ref().contacts[0].name, "Ada Lovelace");
    let listed = client
        .list_contacts(list(Some("Bearer ohk_demo_contacts_read")))
        .await
        .unwrap();
    assert_eq!(listed.get_ref().contacts.len(), 1);
    let created = client
        .create_contact(create(Some("Bearer ohk_demo_all_scopes")))
        .await
        .unwrap();
    assert_eq!(created.get_ref().id, "con_2");
    let account = created
        .metadata()
        .get("x-account-id")
        .map(|v| v.to_str().unwrap());
    assert_eq!(account, Some("ws_acme"), "the handler saw the credential");
}

#[tokio::test]
async fn rejections_are_grpc_statuses_with_the_documented_messages() {
    let mut client = client().await;
    let cases = [
        (
            create(Some("Bearer ohk_demo_contacts_read")),
            Code::PermissionDenied,
            "This action requires the 'contacts:write' scope. Your credential does not have this permission.",
        ),
        (
            create(Some("Bearer ohk_demo_no_api_access")),
            Code::PermissionDenied,
            "API access is not enabled for this account. Please upgrade your plan.",
        ),
        (
            create(None),
            Code::Unauthenticated,
            "Authentication required. Send your token in the Authorization header: 'Authorization: Bearer <token>'.",
        ),
        (
            create(Some("Bearer ohk_revoked_or_unknown")),
            Code::Unauthenticated,
            "The access token is invalid, expired or revoked.",
        ),
        (
            // RFC 6750 §3.1: another scheme is no credential.
            create(Some("Basic dXNlcjpwYXNz")),
            Code::Unauthenticated,
            "Authentication required. Send your token in the Authorization header: 'Authorization: Bearer <token>'.",
        ),
    ];
    for (request, code, message) in cases {
        let status = client.create_contact(request).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
    }
    let status = client
        .list_contacts(list(Some("Bearer ohk_demo_no_api_access")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // Nothing was created by the refused calls.
    let listed = client
        .list_contacts(list(Some("Bearer ohk_demo_all_scopes")))
        .await
        .unwrap();
    assert_eq!(listed.get_ref().contacts.len(), 1);
}
