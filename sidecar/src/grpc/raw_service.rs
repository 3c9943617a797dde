//! A gRPC service for tests of the transport: one unary method whose request and answer are raw
//! bytes, answered by a plain function, so a test sees what the connection did and nothing else.

use std::task::{Context, Poll};

use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use weir_proto::raw_codec::RawBytes;

/// Answers `/test.Answer/Answer` with `self.0(request bytes)`.
#[derive(Clone)]
pub struct RawAnswer(pub fn(Vec<u8>) -> Vec<u8>);

/// The path of the method, for `tonic::client::Grpc::unary`.
pub const PATH: &str = "/test.Answer/Answer";

impl NamedService for RawAnswer {
    const NAME: &'static str = "test.Answer";
}

impl Service<http::Request<tonic::body::Body>> for RawAnswer {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let answer = self.clone();
        Box::pin(async move { Ok(tonic::server::Grpc::new(RawBytes).unary(answer, request).await) })
    }
}

impl Service<Request<Vec<u8>>> for RawAnswer {
    type Response = Response<Vec<u8>>;
    type Error = Status;
    type Future = std::future::Ready<Result<Response<Vec<u8>>, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Vec<u8>>) -> Self::Future {
        std::future::ready(Ok(Response::new((self.0)(request.into_inner()))))
    }
}

/// Calls the method once on `client`.
pub async fn call(client: &mut tonic::client::Grpc<tonic::transport::Channel>, request: Vec<u8>) -> Vec<u8> {
    client.ready().await.expect("the connection is up");
    let path = http::uri::PathAndQuery::from_static(PATH);
    client.unary(Request::new(request), path, RawBytes).await.expect("the call is answered").into_inner()
}
