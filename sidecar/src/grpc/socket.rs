//! The broker's end of a gRPC connection: the answers that are ready together leave in one system
//! call, and what the client sent is taken from the kernel in large reads.
//!
//! h2 copies a DATA frame shorter than its "chain threshold" into its write buffer and hands a
//! longer one over as a second slice, flushing the socket before it buffers any later frame. The
//! threshold is 256 bytes on a socket that takes vectored writes and 1,024 on one that does not.
//! On a plain TCP socket a unary answer (HEADERS, a DATA frame of a few hundred bytes, trailers)
//! therefore left in two writes, and the 10-byte trailers, which complete the call, travelled in
//! a TCP segment of their own: one more system call, segment and wake-up of the client per call.
//!
//! Two things keep the writes few:
//!
//! - Everything h2 hands over is gathered here (this socket says it is not vectored, so h2 copies
//!   answers of up to 1 KiB together with their trailers), and written when h2 flushes.
//! - A flush with something gathered first lets the tasks that are ready to run go (it wakes its
//!   own task and answers `Pending`, as `tokio::task::yield_now` does). Their answers queue up in
//!   h2 meanwhile, and the next flush writes them all. Without it, the connection task ran after
//!   nearly every answer and wrote it alone: 67,400 writes in 2 s of pubsub load, 23,000 with it.
//!
//! ```text
//!   h2 ──frames──▶ CoalescedSocket ──one write per flush, after one yield──▶ TCP
//!   answer of a send:  [HEADERS][DATA 400 B][trailers]     one write with the answers of the
//!                                                          calls that finished meanwhile
//!   receive of 64 KiB: [head][16 KiB][head][16 KiB]...     one write per 64 KiB gathered
//! ```
//!
//! An idle connection pays one pass of the scheduler's queue per flush, which is empty then.
//! Slices of 32 KiB and more (DATA frames for a client that accepts long frames) are not copied:
//! they leave in one vectored write behind what was gathered before them.
//!
//! Reads: h2 asks for exactly what completes the frame it is reading (a 9-byte frame header, then
//! the rest of the frame, 8 KiB at most at first), so a send of 16 messages of 1 KiB took three
//! or four `recvfrom`s although the client had many such sends queued in the socket. Here one
//! read takes up to `READ_AHEAD_BYTES` and h2's asks are served from it, at the price of one
//! copy: 5,400 reads a second instead of 37,500 under Async publishing (the same throughput: the
//! copy costs about what the system calls did) and pubsub 2.4% faster (BENCHMARKS.md). The
//! buffer is let go whenever the socket is found empty, so an idle connection holds none.
//!
//! ```text
//!   TCP ──one read of up to 64 KiB──▶ read-ahead ──h2's asks (9 B, 8 KiB, ...)──▶ h2
//! ```

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use crate::grpc::serving::OpenConnection;

/// Bytes gathered before they are written out anyway: four DATA frames of the default 16 KiB.
const BUFFER_BYTES: usize = 64 << 10;

/// Slices this long are written from where they are, not copied. Copying a 16 KiB frame costs
/// less than the write it saves (BENCHMARKS.md, "Changes measured").
const PASS_THROUGH_BYTES: usize = 32 << 10;

/// Bytes one read takes from the kernel at most: a few sends of 16 messages of 1 KiB.
const READ_AHEAD_BYTES: usize = 64 << 10;

/// A connection whose writes are gathered until h2 flushes them, and whose reads are large.
#[derive(Debug)]
pub struct CoalescedSocket<T> {
    io: T,
    /// Taken from h2, not yet written to the socket.
    gathered: Vec<u8>,
    /// A flush let the tasks that were ready to run go first; the next one writes.
    yielded: bool,
    /// Read from the socket, not yet taken by h2.
    read_ahead: BytesMut,
    /// Keeps the connection counted on its serving thread while it is open.
    _open: Option<OpenConnection>,
}

impl<T> CoalescedSocket<T> {
    pub fn new(io: T) -> Self {
        Self { io, gathered: Vec::new(), yielded: false, read_ahead: BytesMut::new(), _open: None }
    }

    /// Counted among its serving thread's open connections until dropped (`grpc::serving`).
    pub fn counted(self, open: OpenConnection) -> Self {
        Self { _open: Some(open), ..self }
    }
}

impl<T: AsyncWrite + Unpin> CoalescedSocket<T> {
    /// Writes out what is gathered.
    fn poll_write_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.gathered.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.gathered))?;
            self.consume_gathered(n)?;
        }
        self.yielded = false;
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

impl<T: AsyncWrite + Connected> Connected for CoalescedSocket<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> T::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CoalescedSocket<T> {
    /// Serves `buf` from the read-ahead, reading from the socket first when it is empty (straight
    /// into `buf` when that asks for as much as one read-ahead).
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read_ahead.is_empty() {
            if buf.remaining() >= READ_AHEAD_BYTES {
                this.read_ahead = BytesMut::new();
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            this.read_ahead.reserve(READ_AHEAD_BYTES);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.read_ahead) {
                Poll::Ready(Ok(_)) => {}
                other => {
                    // Nothing waiting (or the connection failed): an idle connection keeps no buffer.
                    this.read_ahead = BytesMut::new();
                    return other.map_ok(|_| ());
                }
            }
        }
        let n = buf.remaining().min(this.read_ahead.len());
        buf.put_slice(&this.read_ahead[..n]);
        this.read_ahead.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescedSocket<T> {
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
        if !this.gathered.is_empty() && !this.yielded {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
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
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Channel, Server};

    use crate::grpc::raw_service::{self, RawAnswer};

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
        let mut socket = CoalescedSocket::new(Sink::default());
        let (head, rest) = (vec![1u8; 1024], vec![2u8; 40 << 10]);
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

    /// A flush with something gathered first gives the other tasks their turn: it wakes its own
    /// task and answers `Pending` without writing. What is written meanwhile (answers the other
    /// tasks finished) leaves in the same write as what was gathered, at the next flush. A flush
    /// with nothing gathered does not wait.
    #[test]
    fn a_flush_yields_once_and_then_writes_all_that_was_gathered() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Wake, Waker};

        struct CountWakes(AtomicUsize);
        impl Wake for CountWakes {
            fn wake(self: Arc<Self>) {
                self.wake_by_ref();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut socket = CoalescedSocket::new(Sink::default());
        let mut write = |socket: &mut CoalescedSocket<Sink>, bytes: &[u8]| {
            let written = Pin::new(socket).poll_write(&mut cx, bytes);
            assert!(matches!(written, Poll::Ready(Ok(n)) if n == bytes.len()));
        };
        let flush = |socket: &mut CoalescedSocket<Sink>| Pin::new(socket).poll_flush(&mut Context::from_waker(&waker));

        assert!(matches!(flush(&mut socket), Poll::Ready(Ok(()))), "nothing gathered: no turn to give");
        for round in 0..2 {
            write(&mut socket, b"answer one");
            assert!(flush(&mut socket).is_pending(), "round {round}: the first flush yields");
            assert_eq!(wakes.0.load(Ordering::Relaxed), round + 1, "and wakes its task to come back");
            assert!(socket.io.writes.is_empty(), "round {round}: nothing written yet");
            write(&mut socket, b"answer two");
            assert!(matches!(flush(&mut socket), Poll::Ready(Ok(()))));
            assert_eq!(socket.io.writes.len(), 1, "round {round}: both answers in one write");
            assert_eq!(socket.io.out, b"answer oneanswer two");
            socket.io.writes.clear();
            socket.io.out.clear();
        }
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
                let mut socket = CoalescedSocket::new(Sink { limits, ..Sink::default() });
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

    /// A socket that hands out `chunks` in turn, each read taking what fits of the next one
    /// (an empty chunk means "nothing waiting": it wakes the task and answers `Pending`), and
    /// records how many bytes each read asked for.
    #[derive(Default)]
    struct Source {
        chunks: std::collections::VecDeque<Vec<u8>>,
        asks: Vec<usize>,
    }

    impl AsyncRead for Source {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.asks.push(buf.remaining());
            let Some(chunk) = this.chunks.front_mut() else { return Poll::Ready(Ok(())) };
            if chunk.is_empty() {
                this.chunks.pop_front();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.remaining().min(chunk.len());
            buf.put_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                this.chunks.pop_front();
            }
            Poll::Ready(Ok(()))
        }
    }

    /// h2's small asks are served from one large read; when the socket has nothing waiting the
    /// buffer is let go, and an ask as large as the read-ahead goes to the socket directly.
    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read() {
        use tokio::io::AsyncReadExt;
        let sent: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let chunks = [sent.clone(), Vec::new(), vec![9u8; READ_AHEAD_BYTES]].into();
        let mut socket = CoalescedSocket::new(Source { chunks, asks: Vec::new() });
        let mut got = vec![0u8; sent.len()];
        for piece in got.chunks_mut(8 << 10) {
            socket.read_exact(piece).await.unwrap();
        }
        assert_eq!(got, sent);
        assert_eq!(socket.io.asks, [READ_AHEAD_BYTES], "five asks of 8 KiB, one read");

        let mut small = [0u8; 9];
        let polled = Pin::new(&mut socket)
            .poll_read(&mut Context::from_waker(futures::task::noop_waker_ref()), &mut ReadBuf::new(&mut small));
        assert!(polled.is_pending(), "nothing waiting");
        assert_eq!(socket.read_ahead.capacity(), 0, "an idle connection keeps no buffer");

        let mut large = vec![0u8; READ_AHEAD_BYTES];
        socket.read_exact(&mut large).await.unwrap();
        assert_eq!(socket.io.asks.last(), Some(&READ_AHEAD_BYTES));
        assert_eq!(socket.read_ahead.capacity(), 0, "read straight into the asker's buffer");
        assert!(large.iter().all(|b| *b == 9));
        assert_eq!(socket.read(&mut small).await.unwrap(), 0, "the end of the stream reads as 0 bytes");
    }

    proptest::proptest! {
        /// However the client's bytes arrive and however little h2 asks for at a time, it reads
        /// them complete and in order.
        #[test]
        fn what_is_read_arrives_whole_and_in_order(
            arrivals in proptest::collection::vec(0usize..100_000, 1..12),
            asks in proptest::collection::vec(1usize..70_000, 1..8),
        ) {
            use tokio::io::AsyncReadExt;
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut sent = Vec::new();
            let chunks = arrivals
                .iter()
                .enumerate()
                .map(|(i, len)| {
                    let chunk: Vec<u8> = (0..*len).map(|j| (i * 31 + j) as u8).collect();
                    sent.extend_from_slice(&chunk);
                    chunk
                })
                .collect();
            let got = runtime.block_on(async {
                let mut socket = CoalescedSocket::new(Source { chunks, asks: Vec::new() });
                let mut got = Vec::new();
                for ask in asks.iter().cycle() {
                    let mut piece = vec![0u8; *ask];
                    match socket.read(&mut piece).await.unwrap() {
                        0 => break,
                        n => got.extend_from_slice(&piece[..n]),
                    }
                }
                got
            });
            proptest::prop_assert!(got == sent, "{} bytes read, {} sent", got.len(), sent.len());
        }
    }

    /// Answers a request of one little-endian `u16` with that many bytes.
    fn answer(request: Vec<u8>) -> Vec<u8> {
        vec![7u8; u16::from_le_bytes(request[..2].try_into().unwrap()).into()]
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
            .map_ok(move |stream| CoalescedSocket::new(Logged { stream, writes: logged.clone() }));
        tokio::spawn(Server::builder().add_service(RawAnswer(answer)).serve_with_incoming(incoming));
        let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
        let mut client = tonic::client::Grpc::new(channel);

        // The first call also carries the connection's settings.
        raw_service::call(&mut client, vec![0, 0]).await;
        for len in [16u16, 300, 400, 900] {
            client.ready().await.unwrap();
            writes.lock().unwrap().clear();
            let answer = raw_service::call(&mut client, len.to_le_bytes().to_vec()).await;
            assert_eq!(answer.len(), usize::from(len));
            let writes = writes.lock().unwrap().clone();
            // HEADERS, DATA (gRPC's 5-byte prefix and the answer) and the trailers.
            assert_eq!(writes.len(), 1, "an answer of {len} bytes left in writes of {writes:?} bytes");
            assert!(writes[0] > usize::from(len) + 5, "{writes:?}");
        }
    }
}
