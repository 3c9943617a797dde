//! The broker's end of a gRPC connection: each flush of HTTP/2 frames leaves in one system call.
//!
//! h2 copies a DATA frame shorter than its "chain threshold" into its write buffer and hands a
//! longer one over as a second slice, flushing the socket before it buffers any later frame. The
//! threshold is 256 bytes on a socket that takes vectored writes and 1,024 on one that does not.
//! On a plain TCP socket a unary answer (HEADERS, a DATA frame of a few hundred bytes, trailers)
//! therefore left in two writes, and the 10-byte trailers, which complete the call, travelled in
//! a TCP segment of their own: one more system call, segment and wake-up of the client per call.
//!
//! ```text
//!   h2 ──frames──▶ CoalescedWrites (not vectored: threshold 1,024) ──one write per flush──▶ TCP
//!   answer of a send:  [HEADERS][DATA 400 B][trailers]   before: writev 452 B + writev 10 B
//!                                                        now:    write 462 B
//!   16 KiB DATA frame: [head + first 1,024 B][rest]      before: writev;  now: write (copied once)
//! ```
//!
//! The price is one copy of what a flush carries into this buffer, small beside a system call.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tonic::transport::server::Connected;

/// Bytes gathered before a write: a DATA frame of the default maximum size (16 KiB) fits with room
/// to spare. Reserved per connection, so kept small.
const BUFFER_BYTES: usize = 32 << 10;

/// A connection whose writes are gathered until h2 flushes them.
#[derive(Debug)]
pub struct CoalescedWrites<T> {
    inner: BufWriter<T>,
}

impl<T: AsyncWrite> CoalescedWrites<T> {
    pub fn new(io: T) -> Self {
        Self { inner: BufWriter::with_capacity(BUFFER_BYTES, io) }
    }
}

impl<T: AsyncWrite + Connected> Connected for CoalescedWrites<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> T::ConnectInfo {
        self.inner.get_ref().connect_info()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for CoalescedWrites<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    /// Not vectored, so that h2 copies answers of up to 1 KiB into its buffer together with the
    /// trailers instead of flushing between them.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::TryStreamExt;
    use tokio::net::{TcpListener, TcpStream};
    use tonic::codegen::{BoxFuture, Service, http};
    use tonic::server::NamedService;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Channel, Server};
    use tonic::{Request, Response, Status};
    use weir_proto::raw_codec::RawBytes;

    use super::*;

    /// A TCP connection that logs the bytes each write hands to the kernel.
    struct Logged {
        stream: TcpStream,
        writes: Arc<Mutex<Vec<usize>>>,
    }

    impl Logged {
        fn log(&self, written: &Poll<io::Result<usize>>) {
            if let Poll::Ready(Ok(n)) = written {
                self.writes.lock().unwrap().push(*n);
            }
        }
    }

    impl Connected for Logged {
        type ConnectInfo = ();

        fn connect_info(&self) {}
    }

    impl AsyncRead for Logged {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Logged {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.stream).poll_write(cx, buf);
            self.log(&written);
            written
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
            self.log(&written);
            written
        }

        fn is_write_vectored(&self) -> bool {
            self.stream.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_shutdown(cx)
        }
    }

    /// Answers a request of one little-endian `u16` with that many bytes.
    #[derive(Clone)]
    struct Answer;

    impl NamedService for Answer {
        const NAME: &'static str = "test.Answer";
    }

    impl Service<http::Request<tonic::body::Body>> for Answer {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            Box::pin(async move { Ok(tonic::server::Grpc::new(RawBytes).unary(Answer, request).await) })
        }
    }

    impl Service<Request<Vec<u8>>> for Answer {
        type Response = Response<Vec<u8>>;
        type Error = Status;
        type Future = std::future::Ready<Result<Response<Vec<u8>>, Status>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Vec<u8>>) -> Self::Future {
            let len = u16::from_le_bytes(request.into_inner()[..2].try_into().unwrap());
            std::future::ready(Ok(Response::new(vec![7u8; len.into()])))
        }
    }

    /// The answer of a send (a status and an entry per message: a few hundred bytes) reaches the
    /// kernel in one write, its trailers included: one TCP segment and one wake-up of the client.
    #[tokio::test]
    async fn a_unary_answer_leaves_in_one_write() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let writes = Arc::new(Mutex::new(Vec::new()));
        let logged = writes.clone();
        let incoming = TcpIncoming::from(listener)
            .map_ok(move |stream| CoalescedWrites::new(Logged { stream, writes: logged.clone() }));
        tokio::spawn(Server::builder().add_service(Answer).serve_with_incoming(incoming));
        let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        let path = http::uri::PathAndQuery::from_static("/test.Answer/Answer");

        // The first call also carries the connection's settings.
        client.ready().await.unwrap();
        client.unary::<_, Vec<u8>, _>(Request::new(vec![0, 0]), path.clone(), RawBytes).await.unwrap();
        for len in [16u16, 300, 400, 900] {
            client.ready().await.unwrap();
            writes.lock().unwrap().clear();
            let answer = client.unary(Request::new(len.to_le_bytes().to_vec()), path.clone(), RawBytes).await.unwrap();
            assert_eq!(answer.into_inner().len(), usize::from(len));
            let writes = writes.lock().unwrap().clone();
            // HEADERS, DATA (gRPC's 5-byte prefix and the answer) and the trailers.
            assert_eq!(writes.len(), 1, "an answer of {len} bytes left in writes of {writes:?} bytes");
            assert!(writes[0] > usize::from(len) + 5, "{writes:?}");
        }
    }
}
