//! Leader election with a `coordination.k8s.io/v1` Lease, so that only one operator replica runs
//! the controllers.
//!
//! ```text
//!   acquire ──► holder = me ──► renew every RENEW_PERIOD ──► SIGTERM: release (holder = "")
//!      ▲                               │ renewal failing for longer than RENEW_DEADLINE
//!      └── wait while another          ▼
//!          holder renews               lost: stop the controllers (the process exits)
//! ```
//!
//! As in client-go, a foreign lease is judged expired by *this* process's clock: it counts from
//! the moment it last saw the lease record change, not from the `renewTime` written by another
//! node, so clock skew between nodes does not matter. Updates carry the `resourceVersion` that was
//! read, so two candidates cannot both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::{Error, Result};

/// How long a lease is valid after its last renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the holder keeps trying to renew before it gives up leadership.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between renewals, and between acquisition attempts.
pub const RENEW_PERIOD: Duration = Duration::from_secs(2);

/// Where the lease lives and who is asking.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
}

/// The last lease record seen and when it was first seen in that state.
struct Observed {
    holder: Option<String>,
    renew: Option<Timestamp>,
    seen_at: Instant,
}

/// Acquires, renews and releases one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Mutex<Option<Observed>>,
}

/// Outcome of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the lease.
    Leading,
    /// Another replica does.
    Following,
}

impl LeaderElector {
    /// An elector for the lease `config.name` in `config.namespace`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &config.namespace), config, observed: Mutex::new(None) }
    }

    fn now() -> MicroTime {
        MicroTime(Timestamp::now())
    }

    fn spec_for_me(&self, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(Self::now()),
            renew_time: Some(Self::now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to take or renew the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt> {
        let name = &self.config.name;
        let lease = self.api.get_opt(name).await.map_err(Error::kube(format!("get Lease {name}")))?;
        let Some(mut lease) = lease else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec_for_me(0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(Attempt::Following),
                Err(e) => Err(Error::kube(format!("create Lease {name}"))(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        if !mine && holder.is_some() && !self.expired(&spec).await {
            return Ok(Attempt::Following);
        }
        let new_spec = if mine {
            LeaseSpec { renew_time: Some(Self::now()), ..spec }
        } else {
            self.spec_for_me(spec.lease_transitions.unwrap_or(0).saturating_add(1))
        };
        lease.spec = Some(new_spec);
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => {
                if !mine {
                    info!(lease = %name, previous = ?holder, "acquired leadership");
                }
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(Attempt::Following),
            Err(e) => Err(Error::kube(format!("update Lease {name}"))(e)),
        }
    }

    /// Whether a foreign lease has not changed for longer than its duration (by our clock).
    async fn expired(&self, spec: &LeaseSpec) -> bool {
        let holder = spec.holder_identity.clone();
        let renew = spec.renew_time.as_ref().map(|t| t.0);
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
        let mut observed = self.observed.lock().await;
        match observed.as_ref() {
            Some(o) if o.holder == holder && o.renew == renew => o.seen_at.elapsed() > duration,
            _ => {
                *observed = Some(Observed { holder, renew, seen_at: Instant::now() });
                false
            }
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => return,
                Ok(Attempt::Following) => {}
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(RENEW_PERIOD).await;
        }
    }

    /// Renews the lease until renewal fails for longer than [`RENEW_DEADLINE`] or another
    /// replica took it; returns then (leadership is lost).
    pub async fn hold(&self) -> String {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(RENEW_PERIOD).await;
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => last_ok = Instant::now(),
                Ok(Attempt::Following) => return "another replica holds the lease".to_owned(),
                Err(e) => {
                    warn!(error = %e, "lease renewal failed");
                    if last_ok.elapsed() > RENEW_DEADLINE {
                        return format!("could not renew the lease for {RENEW_DEADLINE:?}: {e}");
                    }
                }
            }
        }
    }

    /// Gives the lease up (on shutdown), so another replica takes over at once.
    pub async fn release(&self) -> Result<()> {
        let name = &self.config.name;
        let Some(mut lease) = self.api.get_opt(name).await.map_err(Error::kube(format!("get Lease {name}")))? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(Self::now()),
            ..spec
        });
        self.api
            .replace(name, &PostParams::default(), &lease)
            .await
            .map_err(Error::kube(format!("release Lease {name}")))?;
        info!(lease = %name, "released leadership");
        Ok(())
    }
}
