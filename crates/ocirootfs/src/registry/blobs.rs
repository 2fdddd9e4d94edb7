//! Layer downloads: each blob streamed into the [`Cache`] by a blocking writer thread, verified
//! while it downloads, retried with backoff.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::Cache;
use crate::source::SourceError;

use super::backoff::Backoff;
use super::errors::classify;
use super::Remote;

/// What a download sends its blob writer.
enum Chunk<B> {
    Bytes(B),
    /// Every byte was sent: verify and rename the blob into place.
    End,
}

/// A [`Cache`] blob writer on a blocking thread, fed chunks through the channel: file writes
/// and SHA-256 never run on the runtime's two async workers. Gives the blob's path after
/// [`Chunk::End`], `None` when the channel closes before it (the partial file is removed).
/// At most 16 chunks wait in the channel, so a download never holds the blob in memory.
#[allow(clippy::type_complexity)]
fn blocking_writer<B: AsRef<[u8]> + Send + 'static>(
    cache: Cache,
    digest: String,
    size: Option<u64>,
) -> (
    tokio::sync::mpsc::Sender<Chunk<B>>,
    tokio::task::JoinHandle<Result<Option<PathBuf>, crate::cache::CacheError>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk<B>>(16);
    let task = tokio::task::spawn_blocking(move || {
        let mut w = cache.writer(&digest, size)?;
        while let Some(c) = rx.blocking_recv() {
            match c {
                Chunk::Bytes(b) => w.write_chunk(b.as_ref())?,
                Chunk::End => return w.finish().map(Some),
            }
        }
        Ok(None)
    });
    (tx, task)
}

/// One layer download, run as a task on the runtime.
pub(super) struct Download {
    pub(super) client: Arc<oci_client::Client>,
    pub(super) reference: oci_client::Reference,
    pub(super) remote: Remote,
    pub(super) cache: Cache,
    pub(super) digest: String,
    pub(super) size: Option<u64>,
    pub(super) bar: Option<indicatif::ProgressBar>,
    pub(super) counter: Arc<std::sync::atomic::AtomicU64>,
}

pub(super) async fn download(d: Download) -> Result<PathBuf, SourceError> {
    use futures_util::StreamExt;
    let Download {
        client,
        reference,
        remote,
        cache,
        digest,
        size,
        bar,
        counter,
    } = d;
    let image = &remote.image;
    let mut backoff = Backoff::new();
    loop {
        let res: Result<PathBuf, (SourceError, bool)> = async {
            let mut stream = client
                .pull_blob_stream(&reference, digest.as_str())
                .await
                .map_err(|e| match classify(e, &remote) {
                    (SourceError::NotFound { .. }, _) => (
                        SourceError::MissingBlob {
                            digest: digest.clone(),
                            where_: image.to_string(),
                        },
                        false,
                    ),
                    c => c,
                })?
                .stream;
            let (tx, writer) = blocking_writer(cache.clone(), digest.clone(), size);
            let mut written = 0u64;
            if let Some(b) = &bar {
                b.set_position(0);
            }
            let mut ended = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        let n = c.len() as u64;
                        if tx.send(Chunk::Bytes(c)).await.is_err() {
                            // The writer stopped on an error of its own, returned below.
                            break;
                        }
                        written += n;
                        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        if let Some(b) = &bar {
                            b.inc(n);
                        }
                    }
                    Err(e) => {
                        ended = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = ended {
                // Closing the channel without `End` drops the partial file.
                drop(tx);
                let _ = writer.await;
                // An error once every byte arrived is the client's digest check.
                let complete = size.is_some_and(|s| written >= s);
                return Err((
                    SourceError::Registry {
                        image: image.to_string(),
                        message: format!("downloading {digest}: {e}"),
                    },
                    !complete,
                ));
            }
            let _ = tx.send(Chunk::End).await;
            drop(tx);
            match writer.await {
                Ok(Ok(Some(p))) => Ok(p),
                Ok(Err(e)) => Err((e.into(), false)),
                // `None` cannot follow a delivered End; both say the writer thread is gone.
                Ok(Ok(None)) | Err(_) => Err((
                    SourceError::Registry {
                        image: image.to_string(),
                        message: format!("the cache writer of {digest} stopped"),
                    },
                    false,
                )),
            }
        }
        .await;
        match res {
            Ok(p) => {
                if let Some(b) = &bar {
                    b.finish();
                }
                tracing::debug!("downloaded {digest}");
                return Ok(p);
            }
            Err((e, transient)) => {
                if let Some(e) = backoff.after(e, transient).await {
                    if let Some(b) = &bar {
                        b.abandon();
                    }
                    return Err(e);
                }
            }
        }
    }
}
