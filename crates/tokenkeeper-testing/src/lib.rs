//! An in-process OAuth 2.0 / OpenID Connect authorization server for tests, demos and your own
//! integration tests.
//!
//! Start a [`TestServer`], point a tokenkeeper client at [`TestServer::token_endpoint`] (or at
//! [`TestServer::issuer`] for discovery), then assert on what the server saw
//! ([`TestServer::token_requests`], [`TestServer::last_token_request`]) or make it misbehave
//! ([`TestServer::inject_fault`]). See [`TestServer`] for an example.

mod access_tokens;
mod api;
mod authorization_code;
mod authorize;
mod client_auth;
mod client_credentials;
mod device;
mod discovery;
mod dpop;
mod end_session;
mod exchange;
mod faults;
pub mod fuzz;
mod introspection;
mod jwt_bearer;
mod keys;
pub mod layout;
mod logs;
mod metrics;
pub mod mtls;
mod mtls_api;
mod par;
pub mod ports;
pub mod postgres_server;
pub mod redis_servers;
mod refresh;
mod refresh_tokens;
mod request_object;
mod responses;
mod revocation;
mod server;
mod state;
mod token;
mod transport;
mod userinfo;
mod webdriver;

pub use api::TestApi;
pub use faults::{Fault, Times};
pub use logs::LogBuffer;
pub use metrics::TestRecorder;
pub use ports::free_port;
pub use server::{TestServer, TestServerBuilder};
pub use state::{ClientAuthMethod, RecordedRequest, TestClient};
pub use transport::InProcessTransport;
pub use webdriver::{start_and_wait_for, Browser, ChildProcess};
