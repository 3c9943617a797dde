//! Serving threads: each gRPC connection is served by one thread for its whole life.
//!
//! On a work-stealing runtime one send crossed threads twice: the connection's task read the
//! request on one worker, the call's task was stolen by the other, and its answer went back
//! through h2's shared connection state and a wake-up of the first worker. On 2 vCPUs shared with
//! the clients, those hand-offs cost about as much as the sends themselves: one producer
//! connection published 240–290k msgs/s on a two-worker runtime and 380–430k with everything on
//! one thread, at less broker CPU (BENCHMARKS.md, "Changes measured").
//!
//! So a connection — its HTTP/2 task and the tasks of its calls — lives on one thread with a
//! single-threaded runtime of its own, and connections spread over the threads (the one with the
//! fewest open connections takes the next), so the broker still uses every core once it has as
//! many connections. This is how Envoy and thread-per-core brokers serve. Work that is no
//! connection's own (accepting, `/metrics`, checkpoints, timers) runs on the main runtime.
//!
//! ```text
//!   listener ──accept (main runtime)──► fewest open ──► weir-serve-0: [conn A] [conn C]
//!                                                  └──► weir-serve-1: [conn B]
//!   a thread runs its connections' HTTP/2 tasks and the calls they start, nothing else
//! ```
//!
//! The threads run under `SCHED_BATCH` unless told otherwise ([`SchedulingPolicy`]): a serving
//! thread that wakes up does not preempt the thread running on its CPU, it waits for that one to
//! block or use up its slice. Two serving threads each half busy sleep and wake thousands of
//! times a second; woken with the normal policy, each wake-up preempted whatever ran, the client
//! on the same node included (its involuntary context switches fell from 1,561/s to 141/s, and
//! publishing and consuming together went from 193–214k to 212–228k msgs/s consumed in
//! interleaved runs, BENCHMARKS.md "Changes measured").

use std::io;
use std::num::NonZeroUsize;
use std::time::Duration;

use futures::StreamExt;
use prometheus::{IntGauge, IntGaugeVec};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::{Router, TcpIncoming};

use crate::grpc::socket::CoalescedSocket;

/// How long accepting pauses after the listener failed (out of file descriptors, say), so a
/// failure that lasts does not spin a core.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How the kernel schedules the serving threads (also the values of `--serving-scheduling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SchedulingPolicy {
    /// `SCHED_BATCH` (their nice value stays): a woken serving thread does not preempt the
    /// running one. Serving is throughput work done in batches, and a preemption for every
    /// request arriving costs whoever is preempted more than the request gains.
    #[default]
    Batch,
    /// The policy the process was started with (usually `SCHED_OTHER`), for nodes where a
    /// request should preempt whatever else runs.
    Inherited,
}

impl SchedulingPolicy {
    /// Puts the calling thread under this policy.
    fn apply_to_this_thread(self) -> io::Result<()> {
        match self {
            Self::Inherited => Ok(()),
            Self::Batch => set_batch_policy(),
        }
    }
}

#[cfg(target_os = "linux")]
fn set_batch_policy() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param the call only reads; pid 0 is the calling thread.
    #[allow(unsafe_code)]
    let failed = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0;
    if failed { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(not(target_os = "linux"))]
fn set_batch_policy() -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "SCHED_BATCH is Linux only"))
}

/// How many serving threads, and how they are scheduled.
#[derive(Debug, Clone, Copy)]
pub struct Serving {
    /// Threads (connections spread over them).
    pub threads: NonZeroUsize,
    /// Their scheduling policy.
    pub policy: SchedulingPolicy,
}

impl Default for Serving {
    /// One thread per CPU the process may use (its cgroup's CPU limit included), under the
    /// default policy.
    fn default() -> Self {
        let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        Self { threads, policy: SchedulingPolicy::default() }
    }
}

/// The serving threads of one listener.
pub struct ServingThreads {
    threads: Vec<ServingThread>,
}

/// One thread and what the acceptor knows of it.
struct ServingThread {
    /// Accepted connections for it to serve.
    connections: mpsc::UnboundedSender<std::net::TcpStream>,
    /// Its connections that are open (exported as `weir_grpc_connections{thread}`).
    open: IntGauge,
    /// Its server's outcome, once it stopped.
    done: oneshot::Receiver<Result<(), tonic::transport::Error>>,
}

impl ServingThreads {
    /// Starts the threads `serving` asks for, each serving `router`'s services until `stop` turns
    /// true; then each lets its connections finish their calls (HTTP/2 GOAWAY) and ends. Each
    /// thread's open connections are counted in `open_connections`, labelled with its number.
    pub fn start(
        serving: Serving,
        router: &Router,
        stop: &watch::Receiver<bool>,
        open_connections: &IntGaugeVec,
    ) -> io::Result<Self> {
        let Serving { threads, policy } = serving;
        let threads = (0..threads.get())
            .map(|n| {
                let (connections, accepted) = mpsc::unbounded_channel();
                let (report, done) = oneshot::channel();
                let open = open_connections.with_label_values(&[n.to_string()]);
                let (router, mut stop, counted) = (router.clone(), stop.clone(), open.clone());
                // One thread for its blocking work (reading a consumer's backlog, see
                // `broker::receive::BULK_READ_BYTES`): such reads go on beside the serving thread
                // one batch at a time, and what they allocate comes from one thread's heap, not
                // from the heaps of a pool of threads (six of them doubled the broker's memory).
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .max_blocking_threads(1)
                    .thread_name(format!("weir-read-{n}"))
                    .build()?;
                std::thread::Builder::new().name(format!("weir-serve-{n}")).spawn(move || {
                    if let Err(e) = policy.apply_to_this_thread() {
                        tracing::warn!(thread = n, ?policy, error = %e, "serving thread keeps the inherited scheduling policy");
                    }
                    let incoming = UnboundedReceiverStream::new(accepted).map(move |socket: std::net::TcpStream| {
                        let socket = TcpStream::from_std(socket)?;
                        // Counted in by the acceptor.
                        Ok::<_, io::Error>(CoalescedSocket::new(socket).counted(OpenConnection(counted.clone())))
                    });
                    let served = runtime.block_on(router.serve_with_incoming_shutdown(incoming, async move {
                        let _ = stop.wait_for(|stopped| *stopped).await;
                    }));
                    let _ = report.send(served);
                })?;
                Ok(ServingThread { connections, open, done })
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { threads })
    }

    /// Accepts connections on `incoming` and hands each to the thread with the fewest open ones,
    /// until `stop` turns true; then waits for every thread to finish (the first failure is the
    /// outcome).
    pub async fn serve(
        self,
        mut incoming: TcpIncoming,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), tonic::transport::Error> {
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => break,
                accepted = incoming.next() => accepted,
            };
            match accepted {
                Some(Ok(socket)) => self.hand_over(socket),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                }
                None => break,
            }
        }
        // Closes the listener now, so the kernel stops taking connections nobody will serve.
        drop(incoming);
        let mut outcome = Ok(());
        for thread in self.threads {
            drop(thread.connections);
            // A thread that is gone without a report panicked; its panic was printed.
            if let Ok(Err(e)) = thread.done.await
                && outcome.is_ok()
            {
                outcome = Err(e);
            }
        }
        outcome
    }

    /// Moves `socket` to the least busy thread (it is re-registered with that thread's runtime).
    fn hand_over(&self, socket: TcpStream) {
        // A thread whose server ended takes nothing more (before the stop, only a panic ends one).
        let serving = self.threads.iter().filter(|t| !t.connections.is_closed());
        let Some(thread) = serving.min_by_key(|t| t.open.get()) else {
            tracing::error!("no serving thread is left: the gRPC connection is closed unserved");
            return;
        };
        match socket.into_std() {
            Ok(socket) => {
                thread.open.inc();
                if thread.connections.send(socket).is_err() {
                    // The thread has ended (shutting down): the connection closes unserved.
                    thread.open.dec();
                }
            }
            Err(e) => tracing::warn!(error = %e, "handing over an accepted gRPC connection failed"),
        }
    }
}

/// Counts a connection among its thread's open ones until the connection is dropped.
#[derive(Debug)]
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use tonic::transport::{Channel, Server};

    use super::*;
    use crate::grpc::raw_service::{self, RawAnswer};

    /// Answers with the name of the thread that ran the call.
    fn thread_name(_: Vec<u8>) -> Vec<u8> {
        std::thread::current().name().unwrap_or("unnamed").as_bytes().to_vec()
    }

    /// Answers with the scheduling policy of the thread that ran the call, as the kernel reports
    /// it (`/proc/thread-self/stat` field 41: 0 SCHED_OTHER, 3 SCHED_BATCH).
    fn scheduling_policy(_: Vec<u8>) -> Vec<u8> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields 3 on follow the command name, which ends at the last ')'.
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        after_name.split_whitespace().nth(41 - 3).unwrap().as_bytes().to_vec()
    }

    /// Serves `answer` on two threads under `policy` until the returned sender says stop.
    async fn start(
        answer: fn(Vec<u8>) -> Vec<u8>,
        policy: SchedulingPolicy,
        gauges: &IntGaugeVec,
    ) -> (std::net::SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let router = Server::builder().add_service(RawAnswer(answer));
        let serving = Serving { threads: NonZeroUsize::new(2).unwrap(), policy };
        let threads = ServingThreads::start(serving, &router, &stop, gauges).unwrap();
        (address, stop_tx, tokio::spawn(threads.serve(TcpIncoming::from(listener), stop)))
    }

    fn gauges() -> IntGaugeVec {
        IntGaugeVec::new(prometheus::Opts::new("connections", "open connections"), &["thread"]).unwrap()
    }

    /// A new connection to the broker at `address`, and the serving thread each of `calls` calls
    /// on it ran on (all of them, in order).
    async fn connect(address: std::net::SocketAddr, calls: usize) -> (tonic::client::Grpc<Channel>, Vec<String>) {
        let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        let mut threads = Vec::new();
        for _ in 0..calls {
            threads.push(String::from_utf8(raw_service::call(&mut client, Vec::new()).await).unwrap());
        }
        (client, threads)
    }

    /// Every call of a connection runs on the one serving thread the connection was given; a new
    /// connection goes to the thread with the fewest open ones, which counts a closed connection
    /// out; at the stop signal the threads end and `serve` answers.
    #[tokio::test]
    async fn a_connection_stays_on_one_thread_and_new_ones_go_to_the_least_busy() {
        let gauges = gauges();
        let (address, stop_tx, serving) = start(thread_name, SchedulingPolicy::Inherited, &gauges).await;

        let (first, on_first) = connect(address, 20).await;
        assert!(on_first[0].starts_with("weir-serve-"), "{on_first:?}");
        assert!(on_first.iter().all(|t| *t == on_first[0]), "one connection, several threads: {on_first:?}");
        let (second, on_second) = connect(address, 20).await;
        assert!(on_second.iter().all(|t| *t == on_second[0]), "{on_second:?}");
        assert_ne!(on_first[0], on_second[0], "the second connection went to the busy thread");
        let open = |thread: &str| gauges.with_label_values(&[thread]).get();
        assert_eq!((open("0"), open("1")), (1, 1), "weir_grpc_connections counts one on each thread");

        drop(second);
        let freed = on_second[0].trim_start_matches("weir-serve-");
        let mut waited = 0;
        while open(freed) != 0 {
            assert!(waited < 500, "the closed connection is still counted after 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        let (_third, on_third) = connect(address, 5).await;
        assert_eq!(on_third[0], on_second[0], "the third connection did not go to the freed thread");

        drop(first);
        stop_tx.send(true).unwrap();
        serving.await.unwrap().unwrap();
    }

    /// Calls on every serving thread run under the policy asked for: SCHED_BATCH by default,
    /// the test's own (usually SCHED_OTHER) when told to inherit it.
    #[tokio::test]
    async fn serving_threads_run_under_the_policy_asked_for() {
        assert_eq!(SchedulingPolicy::default(), SchedulingPolicy::Batch);
        let own = String::from_utf8(scheduling_policy(Vec::new())).unwrap();
        for (policy, expected) in [(SchedulingPolicy::Batch, "3"), (SchedulingPolicy::Inherited, own.as_str())] {
            let gauges = gauges();
            let (address, stop_tx, serving) = start(scheduling_policy, policy, &gauges).await;
            // Two connections: one on each thread.
            let (_first, on_first) = connect(address, 1).await;
            let (_second, on_second) = connect(address, 1).await;
            let open = |thread: &str| gauges.with_label_values(&[thread]).get();
            assert_eq!((open("0"), open("1")), (1, 1), "one connection on each thread");
            assert_eq!((on_first[0].as_str(), on_second[0].as_str()), (expected, expected), "{policy:?}");
            stop_tx.send(true).unwrap();
            serving.await.unwrap().unwrap();
        }
    }
}
