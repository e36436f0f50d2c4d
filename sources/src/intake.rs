//! Handing what a source received to the journal: decoded events (committed before any
//! answer) and authenticated-but-undecodable inputs (kept as rejected inputs), with the
//! metrics of each. Shared by the push and webhook handlers and the pull loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use herald_core::Event;
use herald_core::ingest::{Committed, Ingest, IngestError, RejectedInput};

use crate::answer::Problem;
use crate::telemetry;

pub struct Intake {
    /// The source's name in routes.yaml.
    pub source: String,
    pub metrics: telemetry::SourceMetrics,
    ingest: Arc<dyn Ingest>,
    /// The source has `enrich:`: its events are committed unrouted and routed by the
    /// enrichment task (docs/architecture.md §11).
    enriching: bool,
}

impl Intake {
    pub fn new(source: &str, ingest: Arc<dyn Ingest>) -> Self {
        Intake {
            source: source.to_owned(),
            metrics: telemetry::SourceMetrics::new(source),
            ingest,
            enriching: false,
        }
    }

    /// Commits events unrouted, for the enrichment task to route.
    pub fn enriching(mut self, enriching: bool) -> Self {
        self.enriching = enriching;
        self
    }

    /// Commits a decoded event; `Ok` only once it is durable (or already was).
    pub async fn commit(&self, event: Event) -> Result<Committed, IngestError> {
        self.metrics.decoded.increment(1);
        // Enrichment never delays the answer: the event is durable here, looked up later.
        let committed = if self.enriching {
            self.ingest.commit_for_enrichment(event).await?
        } else {
            self.ingest.commit(event).await?
        };
        if committed == Committed::Duplicate {
            telemetry::duplicate(&self.source);
        }
        Ok(committed)
    }

    /// The channel `change` came on first within `window`, if another than `channel`, as
    /// the queue knows it for every gateway sharing it (`Ingest::first_channel`); records
    /// this one otherwise.
    pub async fn first_channel(
        &self,
        change: &str,
        channel: &str,
        window: std::time::Duration,
    ) -> Result<Option<String>, IngestError> {
        self.ingest.first_channel(change, channel, window).await
    }

    /// Keeps an input that could not be decoded, with why.
    pub async fn reject(
        &self,
        reason: &str,
        meta: BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<(), IngestError> {
        self.ingest
            .reject(RejectedInput {
                source: self.source.clone(),
                reason: reason.to_owned(),
                received: chrono::Utc::now(),
                meta,
                body: String::from_utf8_lossy(body).into_owned(),
            })
            .await?;
        telemetry::rejected(&self.source);
        Ok(())
    }
}

impl From<IngestError> for Problem {
    fn from(e: IngestError) -> Problem {
        Problem::unavailable(format!("{e}; nothing was stored, retry later"))
    }
}
