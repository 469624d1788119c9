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

    /// Runs `fut` on the runtime and waits for it on this thread. On a
    /// worker of a caller's multi-thread runtime (a server handler calling
    /// the engine directly) the wait is announced with `block_in_place`,
    /// so the caller's other tasks move to another worker meanwhile.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let handle = self.handle().spawn(fut);
        let wait = move || futures::executor::block_on(handle);
        let joined = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        match joined {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("task on an owned runtime cancelled: {e}"),
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
