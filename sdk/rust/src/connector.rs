//! The traits a connector implements, and the glue that exports them as a component.

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::bindings::destination::exports::culvert::connector::destination_connector as dest_api;
use crate::bindings::source::culvert::connector::types as wit;
use crate::bindings::source::exports::culvert::connector::source_connector as source_api;
use crate::types::{Batch, CheckResult, ConnectorError, Result, TableInfo, TableRef};

/// A source connector: describes its configuration, checks it, lists tables and opens
/// readers. Export it with [`export_source!`](crate::export_source).
///
/// Every function receives the configuration as the JSON text the operator wrote; parse
/// it with [`parse_config`](crate::config::parse_config).
pub trait Source: 'static {
    /// The stream of batches this source produces.
    type Reader: Reader;

    /// JSON Schema of the configuration, usually [`spec_of::<MyConfig>()`](crate::config::spec_of).
    fn spec() -> String;

    /// Reachability, credentials and permissions, each with an actionable message.
    /// A configuration that does not parse must give a failing result, not a panic.
    fn check(config: &str) -> Vec<CheckResult>;

    /// Tables the configuration can see; none by default.
    fn discover(config: &str) -> Result<Vec<TableInfo>> {
        let _ = config;
        Ok(Vec::new())
    }

    /// Copy `tables` again (every selected table when empty) while changes keep
    /// streaming; returns a summary for the operator. Unsupported by default.
    fn resync(config: &str, selection: Vec<String>, tables: Vec<TableRef>) -> Result<String> {
        let _ = (config, selection, tables);
        Err(ConnectorError::unsupported(
            "this connector cannot resync tables; recreate the pipeline to copy everything again",
        ))
    }
}

/// A stream of batches: snapshot first, then changes.
pub trait Reader: Sized + 'static {
    /// Open with the configuration (JSON), the table selection (schema-qualified globs
    /// such as `public.*`) and the position to resume after, if any.
    fn open(config: &str, selection: Vec<String>, resume: Option<Vec<u8>>) -> Result<Self>;

    /// The next batch, or `None` when nothing arrived within about a second. A batch
    /// holds at most `max_rows` rows, so the agent can bound memory.
    fn next(&mut self, max_rows: u32) -> Result<Option<Batch>>;

    /// Everything up to `position` is durable at the destination; the source may
    /// release it. Does nothing by default.
    fn ack(&mut self, position: &[u8]) -> Result<()> {
        let _ = position;
        Ok(())
    }
}

/// A destination connector: describes its configuration, checks it and opens writers.
/// Export it with [`export_destination!`](crate::export_destination).
pub trait Destination: 'static {
    /// What applies batches.
    type Writer: Writer;

    /// JSON Schema of the configuration, usually [`spec_of::<MyConfig>()`](crate::config::spec_of).
    fn spec() -> String;

    /// Reachability, credentials and permissions, each with an actionable message.
    /// A configuration that does not parse must give a failing result, not a panic.
    fn check(config: &str) -> Vec<CheckResult>;
}

/// Applies batches, each atomically together with its position.
pub trait Writer: Sized + 'static {
    /// Open with the configuration (JSON) and the pipeline name, which scopes the
    /// stored position.
    fn open(config: &str, pipeline: &str) -> Result<Self>;

    /// The last position committed for this pipeline, if any: the agent resumes after it.
    fn committed(&mut self) -> Result<Option<Vec<u8>>>;

    /// Make the batch durable together with its position and return that position.
    /// A batch at or before the committed position must be a no-op.
    fn apply(&mut self, batch: Batch) -> Result<Vec<u8>>;
}

/// Exports a [`Source`] through the generated bindings.
#[doc(hidden)]
pub struct SourceExport<T>(PhantomData<fn() -> T>);

/// Exports a [`Reader`] as the WIT `reader` resource.
#[doc(hidden)]
pub struct ReaderExport<R>(RefCell<R>);

impl<T: Source> source_api::Guest for SourceExport<T> {
    type Reader = ReaderExport<T::Reader>;

    fn spec() -> String {
        crate::panic::install_hook();
        T::spec()
    }

    fn check(config: String) -> Vec<wit::CheckResult> {
        crate::panic::install_hook();
        T::check(&config).into_iter().map(Into::into).collect()
    }

    fn discover(config: String) -> std::result::Result<Vec<wit::TableInfo>, wit::ConnectorError> {
        crate::panic::install_hook();
        T::discover(&config)
            .map(|tables| tables.into_iter().map(Into::into).collect())
            .map_err(Into::into)
    }

    fn resync(
        config: String,
        selection: Vec<String>,
        tables: Vec<wit::TableRef>,
    ) -> std::result::Result<String, wit::ConnectorError> {
        crate::panic::install_hook();
        T::resync(
            &config,
            selection,
            tables.into_iter().map(Into::into).collect(),
        )
        .map_err(Into::into)
    }
}

impl<R: Reader> source_api::GuestReader for ReaderExport<R> {
    fn open(
        config: String,
        selection: Vec<String>,
        resume: Option<Vec<u8>>,
    ) -> std::result::Result<source_api::Reader, wit::ConnectorError> {
        crate::panic::install_hook();
        R::open(&config, selection, resume)
            .map(|r| source_api::Reader::new(ReaderExport(RefCell::new(r))))
            .map_err(Into::into)
    }

    fn next(&self, max_rows: u32) -> std::result::Result<Option<wit::Batch>, wit::ConnectorError> {
        self.0
            .borrow_mut()
            .next(max_rows)
            .map(|b| b.map(Into::into))
            .map_err(Into::into)
    }

    fn ack(&self, position: Vec<u8>) -> std::result::Result<(), wit::ConnectorError> {
        self.0.borrow_mut().ack(&position).map_err(Into::into)
    }
}

/// Exports a [`Destination`] through the generated bindings.
#[doc(hidden)]
pub struct DestinationExport<T>(PhantomData<fn() -> T>);

/// Exports a [`Writer`] as the WIT `writer` resource.
#[doc(hidden)]
pub struct WriterExport<W>(RefCell<W>);

impl<T: Destination> dest_api::Guest for DestinationExport<T> {
    type Writer = WriterExport<T::Writer>;

    fn spec() -> String {
        crate::panic::install_hook();
        T::spec()
    }

    fn check(config: String) -> Vec<wit::CheckResult> {
        crate::panic::install_hook();
        T::check(&config).into_iter().map(Into::into).collect()
    }
}

impl<W: Writer> dest_api::GuestWriter for WriterExport<W> {
    fn open(
        config: String,
        pipeline: String,
    ) -> std::result::Result<dest_api::Writer, wit::ConnectorError> {
        crate::panic::install_hook();
        W::open(&config, &pipeline)
            .map(|w| dest_api::Writer::new(WriterExport(RefCell::new(w))))
            .map_err(Into::into)
    }

    fn committed(&self) -> std::result::Result<Option<Vec<u8>>, wit::ConnectorError> {
        self.0.borrow_mut().committed().map_err(Into::into)
    }

    fn apply(&self, batch: wit::Batch) -> std::result::Result<Vec<u8>, wit::ConnectorError> {
        self.0.borrow_mut().apply(batch.into()).map_err(Into::into)
    }
}
