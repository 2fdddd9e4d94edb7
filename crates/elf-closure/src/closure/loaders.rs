//! The per-loader search for a needed name: glibc's order and musl's (written out at the top
//! of `src/closure.rs`).

use super::*;

impl Env<'_> {
    pub(super) fn load_glibc(
        &mut self,
        p: &mut Process,
        by: usize,
        name: &str,
    ) -> Option<(String, PathBuf, ElfInfo, Reason)> {
        // Already loaded under this name, path or SONAME.
        if let Some(o) = p
            .objs
            .iter()
            .position(|o| o.names.iter().any(|n| n == name))
        {
            let real = p.objs[o].real.clone();
            return Some((
                p.objs[o].path.clone(),
                real,
                p.objs[o].info.clone(),
                Reason::Direct,
            ));
        }
        let want = p.objs[by].info.clone();
        if name.contains('/') {
            let path = self.expand(p, name, by);
            return self
                .try_file(&path, &want)
                .map(|(a, b, c)| (a, b, c, Reason::Direct));
        }
        let hwcaps = p.hwcaps.clone();
        if p.objs[by].info.runpath.is_empty() {
            let mut did_main = false;
            let mut cur = Some(by);
            while let Some(l) = cur {
                let o = &p.objs[l];
                if o.info.runpath.is_empty() && !o.info.rpath.is_empty() {
                    let dirs: Vec<String> =
                        o.info.rpath.iter().map(|d| self.expand(p, d, l)).collect();
                    if let Some(f) = self.search(name, &dirs, &hwcaps, &want) {
                        let of = PathBuf::from(&p.objs[l].path);
                        return Some((f.0, f.1, f.2, Reason::Rpath { of }));
                    }
                    did_main |= l == 0;
                }
                cur = p.objs[l].loader;
            }
            let main = &p.objs[0];
            if !did_main && main.info.runpath.is_empty() && !main.info.rpath.is_empty() {
                let dirs: Vec<String> = main
                    .info
                    .rpath
                    .iter()
                    .map(|d| self.expand(p, d, 0))
                    .collect();
                if let Some(f) = self.search(name, &dirs, &hwcaps, &want) {
                    let of = PathBuf::from(&p.objs[0].path);
                    return Some((f.0, f.1, f.2, Reason::Rpath { of }));
                }
            }
        }
        if !p.objs[by].info.runpath.is_empty() {
            let dirs: Vec<String> = p.objs[by]
                .info
                .runpath
                .iter()
                .map(|d| self.expand(p, d, by))
                .collect();
            if let Some(f) = self.search(name, &dirs, &hwcaps, &want) {
                let of = PathBuf::from(&p.objs[by].path);
                return Some((f.0, f.1, f.2, Reason::Runpath { of }));
            }
        }
        let nodeflib = p.objs[by].info.nodeflib;
        let cache_id = p.cache_id;
        let in_system_dir = |path: &str, sys: &[String]| {
            sys.iter()
                .any(|d| path.starts_with(&format!("{}/", d.trim_end_matches('/'))))
        };
        if let Some(cache) = self.ldcache() {
            let hit = cache
                .lookup(
                    name,
                    |f| match cache_id {
                        Some(id) => f == id,
                        None => f == 1 || f == 3,
                    },
                    &hwcaps,
                )
                .map(str::to_string);
            if let Some(hit) = hit {
                if !(nodeflib && in_system_dir(&hit, &p.system_dirs)) {
                    if let Some(f) = self.try_file(&hit, &want) {
                        return Some((f.0, f.1, f.2, Reason::LdCache));
                    }
                }
            }
        } else {
            let conf: Vec<String> = self
                .ldsoconf()
                .into_iter()
                .filter(|d| !(nodeflib && in_system_dir(&format!("{d}/"), &p.system_dirs)))
                .collect();
            if let Some(f) = self.search(name, &conf, &hwcaps, &want) {
                return Some((f.0, f.1, f.2, Reason::LdSoConf));
            }
        }
        if !nodeflib {
            let sys = p.system_dirs.clone();
            if let Some(f) = self.search(name, &sys, &hwcaps, &want) {
                return Some((f.0, f.1, f.2, Reason::SystemDir));
            }
        }
        None
    }

    pub(super) fn load_musl(
        &mut self,
        p: &mut Process,
        by: usize,
        name: &str,
    ) -> Option<(String, PathBuf, ElfInfo, Reason)> {
        const RESERVED: [&str; 7] = ["c.", "pthread.", "rt.", "m.", "dl.", "util.", "xnet."];
        let interp = p.interp;
        let is_self = name
            .strip_prefix("lib")
            .is_some_and(|r| RESERVED.iter().any(|x| r.starts_with(x)))
            || interp.is_some_and(|i| p.objs[i].path == name);
        if is_self {
            let i = interp?;
            return Some((
                p.objs[i].path.clone(),
                p.objs[i].real.clone(),
                p.objs[i].info.clone(),
                Reason::Interpreter,
            ));
        }
        let want = p.objs[by].info.clone();
        if name.contains('/') {
            return self
                .try_file(name, &want)
                .map(|(a, b, c)| (a, b, c, Reason::Direct));
        }
        if let Some(o) = p.objs.iter().find(|o| o.names.iter().any(|n| n == name)) {
            return Some((
                o.path.clone(),
                o.real.clone(),
                o.info.clone(),
                Reason::Direct,
            ));
        }
        let mut cur = Some(by);
        while let Some(l) = cur {
            let o = &p.objs[l];
            let (list, runpath) = if !o.info.runpath.is_empty() {
                (o.info.runpath.clone(), true)
            } else {
                (o.info.rpath.clone(), false)
            };
            // musl expands only $ORIGIN / ${ORIGIN}; any other `$` disables the object's path.
            let joined = list.join(":");
            let usable = !joined.contains('$')
                || joined
                    .replace("${ORIGIN}", "")
                    .replace("$ORIGIN", "")
                    .find('$')
                    .is_none();
            if !list.is_empty() && usable {
                let origin = p.objs[l].origin.clone();
                let dirs: Vec<String> = list
                    .iter()
                    .map(|d| d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin))
                    .collect();
                if let Some(f) = self.search(name, &dirs, &[], &want) {
                    let of = PathBuf::from(&p.objs[l].path);
                    let reason = if runpath {
                        Reason::Runpath { of }
                    } else {
                        Reason::Rpath { of }
                    };
                    return Some((f.0, f.1, f.2, reason));
                }
            }
            cur = p.objs[l].loader;
        }
        let (dirs, reason) = p.musl_path.clone()?;
        self.search(name, &dirs, &[], &want)
            .map(|(a, b, c)| (a, b, c, reason))
    }
}
