//! The OAuth 2.0 protocol core: requests, responses, client authentication, discovery.

pub mod authorization;
pub mod client_assertion;
pub mod client_auth;
pub mod device_authorization;
pub mod discovery;
pub mod id_token;
pub mod par;
pub mod profile;
pub(crate) mod refreshing;
pub mod request_object;
pub mod step_up;
pub mod token_endpoint;
pub mod token_request;
pub mod token_response;
pub mod types;
