//! A plain reverse proxy on Pingora: every request to `UPSTREAM` (host:port, plain HTTP, kept
//! alive by Pingora's pool), with `Authorization: $TOKEN` added when `TOKEN` is set (as the
//! BFF adds a token). Listens on `LISTEN`; threads and runtime from the YAML given with `-c`.

use async_trait::async_trait;
use pingora_core::server::configuration::Opt;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

struct Forward {
    upstream: String,
    token: Option<String>,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }

    async fn upstream_request_filter(
        &self,
        _: &mut Session,
        request: &mut pingora_http::RequestHeader,
        _: &mut (),
    ) -> Result<()> {
        if let Some(token) = &self.token {
            request.insert_header("authorization", token.as_str())?;
        }
        Ok(())
    }
}

fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let mut server = Server::new(Some(Opt::parse_args())).expect("the server's configuration");
    server.bootstrap();
    let forward = Forward {
        upstream: var("UPSTREAM"),
        token: std::env::var("TOKEN").ok(),
    };
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, forward);
    proxy.add_tcp(&var("LISTEN"));
    server.add_service(proxy);
    println!("listening http://{}", var("LISTEN"));
    server.run_forever();
}
