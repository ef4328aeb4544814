//! HTTP integration (HI-01 … HI-05): reqwest middleware and tower layer.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tokenkeeper::tower::{BoxError, NonReplayable};
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, Error, MissingToken};
use tokenkeeper_testing::{Fault, Times};
use tower::{Service, ServiceBuilder, ServiceExt as _};

const CC: &str = "client_credentials";

fn reqwest_client(
    tokens: &ClientCredentialsTokenManager,
) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware("api").unwrap())
        .build()
}

type Hyper = HyperClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn hyper_client() -> Hyper {
    HyperClient::builder(TokioExecutor::new()).build_http()
}

/// The hyper client behind the token layer.
fn layered(tokens: &ClientCredentialsTokenManager) -> tokenkeeper::Token<Hyper> {
    ServiceBuilder::new()
        .layer(tokens.layer("api").unwrap())
        .service(hyper_client())
}

/// Sends a GET through a tower service.
async fn send_get(
    service: &mut tokenkeeper::Token<Hyper>,
    url: &str,
) -> http::Response<hyper::body::Incoming> {
    service.ready().await.unwrap().call(get(url)).await.unwrap()
}

fn get(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn hi_01_middleware_and_layer_attach_bearer_token() {
    let server = server().await;
    let api = Api::start(server.clone()).await;
    let tokens = networked(&server);

    let response = reqwest_client(&tokens).get(&api.url).send().await.unwrap();
    assert_eq!(response.status(), 200);

    let mut service = layered(&tokens);
    let response = send_get(&mut service, &api.url).await;
    assert_eq!(response.status(), 200);

    let token = tokens.get_token("api", &default_params()).await.unwrap();
    let expected = format!("Bearer {}", token.access_token().secret());
    assert_eq!(api.seen(), vec![Some(expected.clone()), Some(expected)]);
    assert_eq!(server.token_requests(CC), 1);
}

#[tokio::test]
async fn hi_02_401_invalidates_reacquires_and_retries_once() {
    let server = server().await;
    let api = Api::start(server.clone()).await;
    let tokens = networked(&server);
    let http = reqwest_client(&tokens);

    api.reject_next(1);
    let response = http.post(&api.url).body("payload").send().await.unwrap();
    assert_eq!(response.status(), 200, "retried with a new token");
    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0], seen[1], "the retry carries a new token");
    assert_eq!(server.token_requests(CC), 2);

    // A body-less request keeps its method, URL and headers on the retry.
    api.reject_next(1);
    let response = http
        .get(format!("{}?page=2", api.url))
        .header("x-tag", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        api.tags()[2..],
        [Some("kept".to_owned()), Some("kept".to_owned())]
    );
    assert_eq!(server.token_requests(CC), 3);

    api.always_reject(true);
    let response = http.get(&api.url).send().await.unwrap();
    assert_eq!(response.status(), 401, "a second 401 reaches the caller");
    assert_eq!(api.seen().len(), 6, "exactly one retry");

    // The same through the tower layer. The token that the last 401 led to was refused too,
    // so it is not renewed again at once (CC-14) until an API has accepted it.
    api.always_reject(false);
    let mut service = layered(&tokens);
    assert_eq!(send_get(&mut service, &api.url).await.status(), 200);
    api.reject_next(1);
    let response = send_get(&mut service, &api.url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(api.seen().len(), 9);
    api.always_reject(true);
    let response = send_get(&mut service, &api.url).await;
    assert_eq!(response.status(), 401);
    assert_eq!(api.seen().len(), 11);
}

/// The hyper client, handing each request back with a 401 answer when `hand_back` says so (as
/// tokenkeeper's proxy engine does), for a layer built with `requests_returned_on_401`.
#[derive(Clone)]
struct HandsBack {
    inner: Hyper,
    hand_back: bool,
}

impl Service<http::Request<Full<Bytes>>> for HandsBack {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Full<Bytes>>) -> Self::Future {
        let mut copy = http::Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        let hand_back = self.hand_back;
        let sent = self.inner.call(request);
        Box::pin(async move {
            let mut response = sent.await?;
            if hand_back && response.status() == 401 {
                response
                    .extensions_mut()
                    .insert(tokenkeeper::tower::ReturnedRequest::new(copy));
            }
            Ok(response)
        })
    }
}

#[tokio::test]
async fn hi_02_b_a_request_handed_back_with_its_401_is_sent_again_with_a_renewed_token() {
    let server = server().await;
    let api = Api::start(server.clone()).await;
    let tokens = networked(&server);
    let layer = tokens.layer("api").unwrap().requests_returned_on_401();
    let mut service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(HandsBack {
            inner: hyper_client(),
            hand_back: true,
        });
    let send = async |service: &mut tokenkeeper::Token<HandsBack>| {
        let request = http::Request::get(&api.url)
            .header("x-tag", "kept")
            .body(Full::new(Bytes::from_static(b"")))
            .unwrap();
        service.ready().await.unwrap().call(request).await.unwrap()
    };
    // The first request fetches the token; the second finds it cached.
    assert_eq!(send(&mut service).await.status(), 200);
    assert_eq!(send(&mut service).await.status(), 200);
    assert_eq!(server.token_requests(CC), 1);

    // A 401 to a request sent with the cached token: the token is renewed once, and the
    // request the inner service handed back goes again, with the new token and its headers.
    api.reject_next(1);
    assert_eq!(send(&mut service).await.status(), 200);
    let seen = api.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[1], seen[2], "sent with the cached token");
    assert_ne!(seen[2], seen[3], "sent again with a new one");
    assert_eq!(api.tags()[3], Some("kept".to_owned()));
    assert_eq!(server.token_requests(CC), 2);

    // An inner service that does not hand the request back: the 401 reaches the caller, and
    // nothing is sent again.
    let mut keeps = ServiceBuilder::new().layer(layer).service(HandsBack {
        inner: hyper_client(),
        hand_back: false,
    });
    api.reject_next(1);
    assert_eq!(send(&mut keeps).await.status(), 401);
    assert_eq!(api.seen().len(), 5, "not sent again");
    // The next one goes with the cached token, accepted.
    assert_eq!(send(&mut keeps).await.status(), 200);
    assert_eq!(api.seen().len(), 6);
}

#[tokio::test]
async fn hi_03_non_replayable_bodies_are_not_retried() {
    let server = server().await;
    let api = Api::start(server.clone()).await;
    let tokens = networked(&server);

    api.reject_next(1);
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(
        b"streamed",
    ))]);
    let response = reqwest_client(&tokens)
        .post(&api.url)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.seen().len(), 1, "a streaming body is sent once");

    api.reject_next(1);
    let mut service = ServiceBuilder::new()
        .layer(tokens.layer("api").unwrap())
        .service(
            HyperClient::builder(TokioExecutor::new()).build_http::<NonReplayable<Full<Bytes>>>(),
        );
    let request = http::Request::post(&api.url)
        .body(NonReplayable(Full::new(Bytes::from_static(b"once"))))
        .unwrap();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.seen().len(), 2);
    // The rejected token was still invalidated: the next request carries a new one.
    let response = reqwest_client(&tokens).get(&api.url).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn hi_04_token_failure_fails_the_request() {
    let server = server().await;
    let api = Api::start(server.clone()).await;
    server.inject_fault(Fault::oauth(401, "invalid_client"), Times::Always);
    let tokens = networked(&server);

    let err = reqwest_client(&tokens)
        .get(&api.url)
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = err else {
        panic!("expected a middleware error");
    };
    let token_error = inner.downcast_ref::<Error>().unwrap();
    assert_eq!(token_error.oauth_error(), Some("invalid_client"));

    let mut service = ServiceBuilder::new()
        .layer(tokens.layer("api").unwrap())
        .service(hyper_client());
    let err: BoxError = service
        .ready()
        .await
        .unwrap()
        .call(get(&api.url))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<Error>().is_some(), "{err}");
    assert!(api.seen().is_empty(), "no request went out without a token");

    // Opting in to sending without a token.
    let lenient = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(
            tokens
                .middleware("api")
                .unwrap()
                .on_missing_token(MissingToken::SendWithout),
        )
        .build();
    let response = lenient.get(&api.url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.seen(), vec![None]);
}

#[tokio::test]
async fn hi_05_plain_hyper_client_through_the_layer() {
    let server = server().await;
    let api = Api::start(server.clone()).await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::from_issuer(server.issuer(), CLIENT_ID, SECRET),
        )
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(tokens.layer("api").unwrap())
        .service(hyper_client());
    let mut responses = Vec::new();
    for _ in 0..5 {
        let response = service.clone().oneshot(get(&api.url)).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        responses.push((status, body));
    }
    assert!(responses
        .iter()
        .all(|(s, b)| *s == 200 && b.as_ref() == b"ok"));
    assert_eq!(server.token_requests(CC), 1);
    assert!(api
        .seen()
        .iter()
        .all(|h| h.as_deref().is_some_and(|h| h.starts_with("Bearer "))));
}

#[tokio::test]
async fn hi_02_a_401_from_a_redirect_target_is_not_retried_there() {
    let server = server().await;
    let foreign = Api::start(server.clone()).await;
    foreign.always_reject(true);
    let target = foreign.url.clone();
    let redirector = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { axum::response::Redirect::temporary(&target) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/start", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirector).await });

    let tokens = networked(&server);
    let response = reqwest_client(&tokens).get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        foreign.seen().len(),
        1,
        "no retry goes to where the redirect led"
    );
}

/// A client whose tokens may go to one API's origin only; that API and another one.
async fn with_destination() -> (
    std::sync::Arc<tokenkeeper_testing::TestServer>,
    Api,
    Api,
    ClientCredentialsTokenManager,
) {
    let server = server().await;
    let api = Api::start(server.clone()).await;
    let elsewhere = Api::start(server.clone()).await;
    let origin = url::Url::parse(&api.url)
        .unwrap()
        .origin()
        .ascii_serialization();
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), CLIENT_ID, SECRET).destination(&origin),
        )
        .build()
        .unwrap();
    (server, api, elsewhere, tokens)
}

/// Token destinations: a client that names its origins gets a typed error, and nothing is sent,
/// for a request anywhere else — through the reqwest middleware and the tower layer.
#[tokio::test]
async fn hi_06_tokens_go_only_to_the_client_destinations() {
    let (server, api, elsewhere, tokens) = with_destination().await;

    let http = reqwest_client(&tokens);
    assert_eq!(http.get(&api.url).send().await.unwrap().status(), 200);
    let refused = http.get(&elsewhere.url).send().await.unwrap_err();
    assert!(
        matches!(
            Error::from_middleware(&refused),
            Some(Error::DestinationNotAllowed { origin }) if !origin.contains("/resource")
        ),
        "{refused:?}"
    );

    let mut service = layered(&tokens);
    assert_eq!(send_get(&mut service, &api.url).await.status(), 200);
    let refused = service
        .ready()
        .await
        .unwrap()
        .call(get(&elsewhere.url))
        .await
        .unwrap_err();
    assert!(matches!(
        Error::from_boxed(&*refused),
        Some(Error::DestinationNotAllowed { .. })
    ));
    assert!(
        elsewhere.seen().is_empty(),
        "nothing reached the other origin"
    );
    assert_eq!(api.seen().len(), 2);

    // A destination must be an origin.
    let bad = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new(server.token_endpoint(), CLIENT_ID, SECRET)
                .destination(format!("{}/path", api.url.trim_end_matches('/'))),
        )
        .build()
        .unwrap_err();
    assert!(bad.to_string().contains("destinations"), "{bad}");
}

/// `TokenMiddleware::execute`: the middleware's handling on one request sent by a plain
/// `reqwest::Client`, with no middleware chain — the token attached, a 401 renewed and retried
/// once, destinations enforced.
#[tokio::test]
async fn hi_02_execute_without_a_chain_attaches_retries_and_checks_destinations() {
    let (server, api, elsewhere, tokens) = with_destination().await;
    let http = reqwest::Client::new();
    let middleware = tokens.middleware("api").unwrap();

    let request = http.get(&api.url).build().unwrap();
    let response = middleware.execute(&http, request).await.unwrap();
    assert_eq!(response.status(), 200);
    let token = tokens.get_token("api", &default_params()).await.unwrap();
    assert_eq!(
        api.seen(),
        vec![Some(format!("Bearer {}", token.access_token().secret()))]
    );

    api.reject_next(1);
    let request = http.post(&api.url).body("payload").build().unwrap();
    let response = middleware.execute(&http, request).await.unwrap();
    assert_eq!(response.status(), 200, "retried with a new token");
    let seen = api.seen();
    assert_eq!(seen.len(), 3);
    assert_ne!(seen[1], seen[2], "the retry carries a new token");
    assert_eq!(server.token_requests(CC), 2);

    let request = http.get(&elsewhere.url).build().unwrap();
    let refused = middleware.execute(&http, request).await.unwrap_err();
    assert!(matches!(
        Error::from_middleware(&refused),
        Some(Error::DestinationNotAllowed { .. })
    ));
    assert!(elsewhere.seen().is_empty(), "nothing was sent");
}
