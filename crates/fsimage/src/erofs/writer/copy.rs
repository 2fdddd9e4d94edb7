//! The copy: worker threads stream each file's whole blocks to their place in the image
//! (known before any byte is copied) and return its tail and a digest of its bytes. All-zero
//! blocks are left as holes of the pre-sized output. Results come back in job order, and the
//! error reported is the first job's, so nothing depends on the thread count.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::{WriteError, BLK};

/// One regular file to copy.
pub(super) struct Job {
    pub(super) path: PathBuf,
    pub(super) size: u64,
    /// Where its whole blocks go in the image.
    pub(super) body_at: u64,
    /// How many of its bytes go there; the rest is the inline tail.
    pub(super) body: u64,
}

/// A copied file: its inline tail and the SHA-256 of its contents.
pub(super) type Copied = (Vec<u8>, [u8; 32]);

const CHUNK: usize = 1 << 20;

pub(super) fn run(
    jobs: &[Job],
    out: &File,
    out_path: &Path,
    threads: usize,
) -> Result<Vec<Copied>, WriteError> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
    .clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Copied, WriteError>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = copy_one(job, out, out_path, &mut buf);
                    let failed = r.is_err();
                    results.lock().expect("no panics while held")[i] = Some(r);
                    if failed {
                        // Later jobs are not needed; earlier ones still finish, so the
                        // error reported is the first in tree order.
                        next.fetch_max(jobs.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let results = results.into_inner().expect("threads joined");
    let mut out = Vec::with_capacity(jobs.len());
    for r in results {
        match r {
            Some(r) => out.push(r?),
            None => unreachable!("a job after a failed one is never reached before it"),
        }
    }
    Ok(out)
}

fn copy_one(job: &Job, out: &File, out_path: &Path, buf: &mut [u8]) -> Result<Copied, WriteError> {
    let rerr = |source| WriteError::Read {
        path: job.path.clone(),
        source,
    };
    let werr = |source| WriteError::Write {
        path: out_path.to_path_buf(),
        source,
    };
    let mut f = safefs::tree::open_input(&job.path).map_err(rerr)?;
    let mut hash = Sha256::new();
    let mut tail = Vec::with_capacity((job.size - job.body) as usize);
    let mut done = 0u64;
    while done < job.size {
        let want = (job.size - done).min(buf.len() as u64) as usize;
        let got = read_full(&mut f, &mut buf[..want]).map_err(rerr)?;
        if got < want {
            return Err(WriteError::Changed {
                path: job.path.clone(),
                expected: job.size,
                got: done + got as u64,
            });
        }
        let chunk = &buf[..want];
        hash.update(chunk);
        let body_end = job.body.saturating_sub(done).min(want as u64) as usize;
        // Chunks start block-aligned, so every block of the body is whole but the file's last.
        for (k, block) in chunk[..body_end].chunks(BLK as usize).enumerate() {
            if block.iter().any(|&b| b != 0) {
                let at = job.body_at + done + (k as u64) * BLK;
                out.write_all_at(block, at).map_err(werr)?;
            }
        }
        tail.extend_from_slice(&chunk[body_end..]);
        done += want as u64;
    }
    let mut probe = [0u8; 1];
    if f.read(&mut probe).map_err(rerr)? > 0 {
        return Err(WriteError::Changed {
            path: job.path.clone(),
            expected: job.size,
            got: job.size + 1,
        });
    }
    Ok((tail, hash.finalize().into()))
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
