//! A tonic gRPC server for a small contacts service, protected by scopegate:
//! `ListContacts` needs `contacts:read`, `CreateContact` needs
//! `contacts:write`, and both need the plan's `api-access`. The method-to-scope
//! mapping is a `RoutePolicy`; rejections reach clients as gRPC statuses
//! (UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE) with the documented
//! messages.
//!
//! ```text
//! cargo run --example grpc                        # 127.0.0.1:50051; ADDR overrides
//! grpcurl -plaintext -import-path examples/grpc -proto contacts.proto \
//!   -H "authorization: Bearer ohk_demo_all_scopes" 127.0.0.1:50051 contacts.v1.Contacts/ListContacts
//! ```

#[path = "../demo/mod.rs"]
mod demo;

/// Generated from `contacts.proto` by `regenerate.sh`.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod pb {
    include!("contacts.v1.rs");
}

use std::error::Error;
use std::sync::{Mutex, PoisonError};

use pb::contacts_server::{Contacts, ContactsServer};
use pb::{Contact, CreateContactRequest, ListContactsRequest, ListContactsResponse};
use scopegate::error::ConfigError;
use scopegate::extract::RequestExt;
use scopegate::layer::PolicyLayer;
use scopegate::policy::RoutePolicy;
use scopegate::{CachedStore, Gate};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    demo::init_tracing();
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:50051".to_owned());
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!(
        "grpc example listening on http://{}",
        listener.local_addr()?
    );
    serve(listener).await
}

/// Which scope each gRPC method needs; any other method is refused.
fn policy(gate: &Gate) -> Result<PolicyLayer, ConfigError> {
    gate.policy(
        RoutePolicy::new()
            .require_entitlement("api-access")
            .scope_catalog(demo::SCOPES)
            .grpc("/contacts.v1.Contacts/ListContacts", "contacts:read")
            .grpc("/contacts.v1.Contacts/CreateContact", "contacts:write"),
    )
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener) -> Result<(), Box<dyn Error>> {
    let gate = Gate::new(CachedStore::new(demo::store()));
    let contacts = ContactsService {
        contacts: Mutex::new(vec![Contact {
            id: "con_1".into(),
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
        }]),
    };
    Server::builder()
        .layer(policy(&gate)?)
        .add_service(ContactsServer::new(contacts))
        .serve_with_incoming(TcpIncoming::from(listener))
        .await?;
    Ok(())
}

struct ContactsService {
    contacts: Mutex<Vec<Contact>>,
}

#[tonic::async_trait]
impl Contacts for ContactsService {
    async fn list_contacts(
        &self,
        _: Request<ListContactsRequest>,
    ) -> Result<Response<ListContactsResponse>, Status> {
        let contacts = self
            .contacts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(Response::new(ListContactsResponse { contacts }))
    }

    async fn create_contact(
        &self,
        request: Request<CreateContactRequest>,
    ) -> Result<Response<Contact>, Status> {
        // The credential scopegate resolved rides along in the extensions.
        let account = request.credential().map(|c| c.account_id().to_owned());
        let CreateContactRequest { name, email } = request.into_inner();
        if name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let mut contacts = self.contacts.lock().unwrap_or_else(PoisonError::into_inner);
        let contact = Contact {
            id: format!("con_{}", contacts.len() + 1),
            name,
            email,
        };
        contacts.push(contact.clone());
        drop(contacts);
        let mut response = Response::new(contact);
        if let Some(account) = account.and_then(|a| a.parse().ok()) {
            response.metadata_mut().insert("x-account-id", account);
        }
        Ok(response)
    }
}
