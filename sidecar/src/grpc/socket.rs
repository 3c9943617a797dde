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
//!   16 KiB DATA frame: [head + first 1,015 B][rest]      before: writev
//!                                                        now:    writev (the rest not copied)
//! ```
//!
//! Slices of 4 KiB and more (the rest of a long DATA frame's payload, which h2 hands over apart
//! from the frame's head) are not copied: they leave in one vectored write behind what was gathered before
//! them. Only the short pieces are copied, which costs little beside the system calls it saves.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Bytes gathered before they are written out anyway. Reserved per connection, so kept small.
const BUFFER_BYTES: usize = 32 << 10;

/// Slices this long are written from where they are, not copied. A 16 KiB DATA frame's payload
/// copied into the buffer was 2% of the broker's CPU under pubsub load (BENCHMARKS.md).
const PASS_THROUGH_BYTES: usize = 4 << 10;

/// A connection whose writes are gathered until h2 flushes them.
#[derive(Debug)]
pub struct CoalescedWrites<T> {
    io: T,
    /// Taken from h2, not yet written to the socket.
    gathered: Vec<u8>,
}

impl<T: AsyncWrite + Unpin> CoalescedWrites<T> {
    pub fn new(io: T) -> Self {
        Self { io, gathered: Vec::with_capacity(BUFFER_BYTES) }
    }

    /// Writes out what is gathered.
    fn poll_write_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.gathered.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.gathered))?;
            self.consume_gathered(n)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Drops the first `n` gathered bytes, which the socket took.
    fn consume_gathered(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.gathered.drain(..n.min(self.gathered.len()));
        Ok(())
    }
}

impl<T: AsyncWrite + Connected> Connected for CoalescedWrites<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> T::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for CoalescedWrites<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.len() < PASS_THROUGH_BYTES {
            if this.gathered.len() + buf.len() > BUFFER_BYTES {
                ready!(this.poll_write_gathered(cx))?;
            }
            this.gathered.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        while !this.gathered.is_empty() {
            let both = [IoSlice::new(&this.gathered), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, &both))?;
            let of_buf = n.saturating_sub(this.gathered.len());
            this.consume_gathered(n)?;
            if of_buf > 0 {
                return Poll::Ready(Ok(of_buf));
            }
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    /// Not vectored, so that h2 copies answers of up to 1 KiB into its buffer together with the
    /// trailers instead of flushing between them.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_gathered(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_gathered(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
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

    /// A socket that takes at most `limits[i]` bytes on its i-th write (cycling; 0 means "would
    /// block": it wakes the task and answers `Pending`), and records each write's slices.
    #[derive(Default)]
    struct Sink {
        limits: Vec<usize>,
        calls: usize,
        out: Vec<u8>,
        /// Address and length of every slice each write was handed.
        writes: Vec<Vec<(usize, usize)>>,
    }

    impl Sink {
        fn take(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
            let limit = self.limits.get(self.calls % self.limits.len().max(1)).copied().unwrap_or(usize::MAX);
            self.calls += 1;
            if limit == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.writes.push(bufs.iter().map(|b| (b.as_ptr() as usize, b.len())).collect());
            let mut room = limit;
            for b in bufs {
                let n = b.len().min(room);
                self.out.extend_from_slice(&b[..n]);
                room -= n;
            }
            Poll::Ready(Ok(limit - room))
        }
    }

    impl AsyncWrite for Sink {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.get_mut().take(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().take(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A long slice goes to the socket from where it is, in the same write as the short pieces
    /// gathered before it; the short pieces wait for the flush.
    #[tokio::test]
    async fn a_long_slice_is_not_copied_and_leaves_with_what_came_before() {
        use tokio::io::AsyncWriteExt;
        let mut socket = CoalescedWrites::new(Sink::default());
        let (head, rest) = (vec![1u8; 1024], vec![2u8; 15 << 10]);
        socket.write_all(&head).await.unwrap();
        assert!(socket.io.writes.is_empty(), "a short piece is gathered");
        socket.write_all(&rest).await.unwrap();
        assert_eq!(
            socket.io.writes,
            vec![vec![(socket.gathered.as_ptr() as usize, 1024), (rest.as_ptr() as usize, rest.len())]]
        );
        socket.write_all(b"trailers").await.unwrap();
        socket.flush().await.unwrap();
        assert_eq!(socket.io.writes.len(), 2);
        assert_eq!(socket.io.out, [head, rest, b"trailers".to_vec()].concat());
    }

    proptest::proptest! {
        /// Whatever the sizes of the writes and however little the socket takes at a time, the
        /// bytes reach it complete and in order once flushed.
        #[test]
        fn the_bytes_arrive_whole_and_in_order(
            pieces in proptest::collection::vec((0usize..40_000, proptest::bool::ANY), 1..30),
            limits in proptest::collection::vec(proptest::prop_oneof![proptest::prelude::Just(0usize), 1usize..100, 1usize..70_000], 1..8),
        ) {
            use tokio::io::AsyncWriteExt;
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut expected = Vec::new();
            let out = runtime.block_on(async {
                // One limit that takes something, or nothing would ever be written.
                let limits = [limits, vec![1000]].concat();
                let mut socket = CoalescedWrites::new(Sink { limits, ..Sink::default() });
                for (i, (len, flush)) in pieces.into_iter().enumerate() {
                    let piece: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
                    socket.write_all(&piece).await.unwrap();
                    expected.extend_from_slice(&piece);
                    if flush {
                        socket.flush().await.unwrap();
                    }
                }
                socket.shutdown().await.unwrap();
                socket.io.out
            });
            proptest::prop_assert!(out == expected, "{} bytes out, {} in", out.len(), expected.len());
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
