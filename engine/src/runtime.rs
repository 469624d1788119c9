//! A small tokio runtime owned by a component whose API is blocking (the S3
//! store, the PostgreSQL index): the component's futures run on the
//! runtime's own threads and the caller waits on this thread.

use std::future::Future;

/// A multi-thread runtime, owned by one component for its lifetime. Callers
/// never run inside it: [`OwnedRuntime::run`] spawns the future and waits
/// for its result on the calling thread. Shut down in the background on
/// drop (dropping a runtime may not block inside another runtime's worker).
pub(crate) struct OwnedRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl OwnedRuntime {
    /// Starts `threads` worker threads named `name`.
    pub(crate) fn start(name: &str, threads: usize) -> std::io::Result<OwnedRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(OwnedRuntime { rt: Some(rt) })
    }

    /// The runtime's handle, to spawn tasks whose results are collected
    /// later.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.as_ref().expect("runtime lives until drop").handle()
    }

    /// Runs `fut` to completion, driven on this thread (its I/O and the
    /// tasks it talks to, such as a database connection's, on the
    /// runtime's threads): no spawn and no join handle per call. On a
    /// worker of a caller's multi-thread runtime (a server handler calling
    /// the engine directly) the wait is announced with `block_in_place`,
    /// so the caller's other tasks move to another worker meanwhile.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let wait = move || self.handle().block_on(fut);
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
