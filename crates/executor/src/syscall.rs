//! The seam between the sandbox's logic and the kernel: every raw syscall and every `unsafe`
//! block of the crate lives here, behind the [`Syscall`] trait (as in youki). [`LinuxSyscall`]
//! is the real thing; the recording fake in `fake` (tests only) answers path queries from an
//! in-memory tree and records every call, so mount and pivot_root sequences are unit-tested
//! without root.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::unistd::{ForkResult, Gid, Uid};

/// What a path is, as lstat sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Dir,
    File,
    Symlink,
    /// A socket, device or fifo.
    Other,
}

/// The raw operations the sandbox needs. Object safe; `&self` everywhere so one instance
/// serves a whole setup sequence.
pub(crate) trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// lstat; `None` when the path does not exist.
    fn kind(&self, path: &Path) -> io::Result<Option<FileKind>>;
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates an empty file (an existing one is an error).
    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates or truncates a file with this content and mode.
    fn write_file(&self, path: &Path, content: &[u8], mode: u32) -> io::Result<()>;
    fn copy_file(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    fn unshare(&self, flags: CloneFlags) -> io::Result<()>;
    /// Brings the loopback interface of the current network namespace up.
    fn loopback_up(&self) -> io::Result<()>;
    fn set_no_new_privs(&self) -> io::Result<()>;
    /// Kills this process with SIGKILL when its parent dies.
    fn set_parent_death_kill(&self) -> io::Result<()>;
    /// Drops every capability not in `keep` (a bit mask) from the bounding set.
    fn drop_bounding_caps(&self, keep: u64) -> io::Result<()>;
    /// Sets effective and permitted capabilities to `caps`, inheritable to none.
    fn set_caps(&self, caps: u64) -> io::Result<()>;
    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()>;
    fn set_rlimit(&self, resource: Resource, soft: u64, hard: u64) -> io::Result<()>;
    /// Marks every descriptor from `first` up close-on-exec, so none leaks into the step.
    fn cloexec_from(&self, first: u32) -> io::Result<()>;
    /// Every signal back to its default disposition and unblocked: exec keeps ignored signals
    /// ignored, and forge (like every Rust program) ignores SIGPIPE.
    fn reset_signals(&self) -> io::Result<()>;
    /// Sets the file mode creation mask.
    fn set_umask(&self, mask: u32);
    /// Starts a new session: no controlling terminal, so /dev/tty cannot reach forge's.
    fn setsid(&self) -> io::Result<()>;
    /// Reads an extended attribute without following symlinks; `None` when absent.
    fn get_xattr(&self, path: &Path, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// fork(2). Only called by the single-threaded helper process.
    fn fork(&self) -> io::Result<ForkResult>;
    /// execve(2); returns only on failure.
    fn exec(&self, program: &Path, argv: &[String], env: &[String]) -> io::Error;
}

/// The real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinuxSyscall;

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// All Linux capabilities this kernel knows (CAP_LAST_CAP is 40 on 5.9+).
pub(crate) const LAST_CAP: u32 = 40;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(io::Error::from)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        nix::mount::umount2(target, flags).map_err(io::Error::from)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        nix::unistd::pivot_root(new_root, put_old).map_err(io::Error::from)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chdir(path).map_err(io::Error::from)
    }

    fn kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) => {
                let t = m.file_type();
                Ok(Some(if t.is_dir() {
                    FileKind::Dir
                } else if t.is_file() {
                    FileKind::File
                } else if t.is_symlink() {
                    FileKind::Symlink
                } else {
                    FileKind::Other
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(path)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::DirBuilder::new().mode(mode).create(path)
    }

    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map(drop)
    }

    fn write_file(&self, path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?;
        f.write_all(content)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
    }

    fn copy_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::copy(from, to).map(drop)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(io::Error::from)
    }

    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        nix::sched::unshare(flags).map_err(io::Error::from)
    }

    fn loopback_up(&self) -> io::Result<()> {
        // SAFETY: socket(2) with constant arguments; the result is checked and owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads into the ifreq we own, sized as the kernel expects.
        if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just filled the flags member of the union.
        unsafe {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
        if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)
    }

    fn set_parent_death_kill(&self) -> io::Result<()> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)
    }

    fn drop_bounding_caps(&self, keep: u64) -> io::Result<()> {
        for cap in 0..=LAST_CAP {
            if keep & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                // A capability this kernel does not know is already absent.
                if err.raw_os_error() != Some(libc::EINVAL) {
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    fn set_caps(&self, caps: u64) -> io::Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        let mut header = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let low = caps as u32;
        let high = (caps >> 32) as u32;
        let data = [
            Data {
                effective: low,
                permitted: low,
                inheritable: 0,
            },
            Data {
                effective: high,
                permitted: high,
                inheritable: 0,
            },
        ];
        // SAFETY: capset(2) reads a version-3 header and two data structs, which we pass
        // with the exact layout the kernel defines (linux/capability.h).
        let rc =
            unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
        let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups)?;
        nix::unistd::setgid(Gid::from_raw(gid))?;
        nix::unistd::setuid(Uid::from_raw(uid))?;
        Ok(())
    }

    fn set_rlimit(&self, resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
        nix::sys::resource::setrlimit(resource, soft, hard).map_err(io::Error::from)
    }

    fn cloexec_from(&self, first: u32) -> io::Result<()> {
        // SAFETY: close_range only changes descriptor flags; CLOEXEC keeps every descriptor
        // valid until exec, so no Rust object is left holding a closed fd.
        let rc =
            unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn setsid(&self) -> io::Result<()> {
        nix::unistd::setsid().map(drop).map_err(io::Error::from)
    }

    fn set_umask(&self, mask: u32) {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }

    fn reset_signals(&self) -> io::Result<()> {
        // The kernel's struct sigaction for x86_64 and aarch64 (handler, flags, restorer, mask).
        #[repr(C)]
        struct KernelSigaction {
            handler: usize,
            flags: libc::c_ulong,
            restorer: usize,
            mask: u64,
        }
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SIGRTMAX is 64 on Linux; SIGKILL and SIGSTOP cannot be changed. The raw syscall,
        // because glibc refuses to touch the two real-time signals it reserves, and an ignored
        // disposition of those (inherited from whoever started forge) would survive exec too.
        for signo in 1..=64 {
            if signo == libc::SIGKILL || signo == libc::SIGSTOP {
                continue;
            }
            // SAFETY: rt_sigaction reads one kernel sigaction of the layout above (sigsetsize
            // 8) and writes nothing (null old action); SIG_DFL runs no handler code.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signo,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&nix::sys::signal::SigSet::empty()),
            None,
        )
        .map_err(io::Error::from)
    }

    fn get_xattr(&self, path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
        let cpath = cstring(path.as_os_str().as_bytes())?;
        let cname = cstring(name.as_bytes())?;
        let mut buf = vec![0u8; 256];
        // SAFETY: both strings are NUL-terminated and live across the call; the buffer is
        // writable for its full length, which we pass.
        let n = unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
                _ => Err(err),
            };
        }
        buf.truncate(n as usize);
        Ok(Some(buf))
    }

    fn fork(&self) -> io::Result<ForkResult> {
        // SAFETY: only the helper process forks, and it is single-threaded (it never spawns
        // threads), so the child may run arbitrary code.
        unsafe { nix::unistd::fork() }.map_err(io::Error::from)
    }

    fn exec(&self, program: &Path, argv: &[String], env: &[String]) -> io::Error {
        let to_c = |s: &String| cstring(s.as_bytes());
        let prog = match cstring(program.as_os_str().as_bytes()) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let argv: io::Result<Vec<CString>> = argv.iter().map(to_c).collect();
        let env: io::Result<Vec<CString>> = env.iter().map(to_c).collect();
        match (argv, env) {
            (Ok(argv), Ok(env)) => match nix::unistd::execve(&prog, &argv, &env) {
                Ok(never) => match never {},
                Err(e) => e.into(),
            },
            (Err(e), _) | (_, Err(e)) => e,
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording fake: path queries answer from an in-memory tree, every call is recorded.

    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Node {
        Dir,
        File,
        Symlink(PathBuf),
    }

    #[derive(Debug, Default)]
    pub(crate) struct RecordingSyscall {
        pub(crate) tree: RefCell<BTreeMap<PathBuf, Node>>,
        pub(crate) calls: RefCell<Vec<String>>,
    }

    impl RecordingSyscall {
        pub(crate) fn with_dirs(dirs: &[&str]) -> Self {
            let fake = RecordingSyscall::default();
            for d in dirs {
                fake.tree.borrow_mut().insert(PathBuf::from(d), Node::Dir);
            }
            fake
        }

        pub(crate) fn add(&self, path: &str, node: Node) {
            self.tree.borrow_mut().insert(PathBuf::from(path), node);
        }

        fn record(&self, call: String) {
            self.calls.borrow_mut().push(call);
        }

        pub(crate) fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    /// `MsFlags(MS_BIND | MS_REC)` -> `MS_BIND | MS_REC`; no flags -> `(empty)`.
    fn show_flags(debug: String) -> String {
        let inner = debug
            .split_once('(')
            .map(|(_, rest)| rest.trim_end_matches(')').to_owned())
            .unwrap_or(debug);
        if inner == "0x0" {
            "(empty)".to_owned()
        } else {
            inner
        }
    }

    fn opt(p: Option<&Path>) -> String {
        p.map(|p| p.display().to_string())
            .unwrap_or_else(|| "-".into())
    }

    impl Syscall for RecordingSyscall {
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> io::Result<()> {
            self.record(format!(
                "mount {} {} {} {} {}",
                opt(source),
                target.display(),
                fstype.unwrap_or("-"),
                show_flags(format!("{flags:?}")),
                data.unwrap_or("-")
            ));
            Ok(())
        }
        fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
            self.record(format!(
                "umount {} {}",
                target.display(),
                show_flags(format!("{flags:?}"))
            ));
            Ok(())
        }
        fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
            self.record(format!(
                "pivot_root {} {}",
                new_root.display(),
                put_old.display()
            ));
            Ok(())
        }
        fn chdir(&self, path: &Path) -> io::Result<()> {
            self.record(format!("chdir {}", path.display()));
            Ok(())
        }
        fn kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
            Ok(self.tree.borrow().get(path).map(|n| match n {
                Node::Dir => FileKind::Dir,
                Node::File => FileKind::File,
                Node::Symlink(_) => FileKind::Symlink,
            }))
        }
        fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
            match self.tree.borrow().get(path) {
                Some(Node::Symlink(t)) => Ok(t.clone()),
                _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            }
        }
        fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
            self.record(format!("mkdir {} {mode:o}", path.display()));
            self.tree.borrow_mut().insert(path.to_owned(), Node::Dir);
            Ok(())
        }
        fn create_file(&self, path: &Path, mode: u32) -> io::Result<()> {
            self.record(format!("create {} {mode:o}", path.display()));
            self.tree.borrow_mut().insert(path.to_owned(), Node::File);
            Ok(())
        }
        fn write_file(&self, path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
            self.record(format!(
                "write {} {} bytes {mode:o}",
                path.display(),
                content.len()
            ));
            self.tree.borrow_mut().insert(path.to_owned(), Node::File);
            Ok(())
        }
        fn copy_file(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.record(format!("copy {} {}", from.display(), to.display()));
            self.tree.borrow_mut().insert(to.to_owned(), Node::File);
            Ok(())
        }
        fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
            self.record(format!("symlink {} {}", target.display(), link.display()));
            self.tree
                .borrow_mut()
                .insert(link.to_owned(), Node::Symlink(target.to_owned()));
            Ok(())
        }
        fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
            self.record(format!("chown {} {uid}:{gid}", path.display()));
            Ok(())
        }
        fn sethostname(&self, name: &str) -> io::Result<()> {
            self.record(format!("sethostname {name}"));
            Ok(())
        }
        fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
            self.record(format!("unshare {flags:?}"));
            Ok(())
        }
        fn loopback_up(&self) -> io::Result<()> {
            self.record("loopback_up".into());
            Ok(())
        }
        fn set_no_new_privs(&self) -> io::Result<()> {
            self.record("no_new_privs".into());
            Ok(())
        }
        fn set_parent_death_kill(&self) -> io::Result<()> {
            self.record("pdeathsig".into());
            Ok(())
        }
        fn drop_bounding_caps(&self, keep: u64) -> io::Result<()> {
            self.record(format!("capbset keep {keep:#x}"));
            Ok(())
        }
        fn set_caps(&self, caps: u64) -> io::Result<()> {
            self.record(format!("capset {caps:#x}"));
            Ok(())
        }
        fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
            self.record(format!("set_ids {uid}:{gid} {groups:?}"));
            Ok(())
        }
        fn set_rlimit(&self, resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
            self.record(format!("rlimit {resource:?} {soft} {hard}"));
            Ok(())
        }
        fn cloexec_from(&self, first: u32) -> io::Result<()> {
            self.record(format!("cloexec_from {first}"));
            Ok(())
        }
        fn setsid(&self) -> io::Result<()> {
            self.record("setsid".into());
            Ok(())
        }
        fn set_umask(&self, mask: u32) {
            self.record(format!("umask {mask:o}"));
        }
        fn reset_signals(&self) -> io::Result<()> {
            self.record("reset_signals".into());
            Ok(())
        }
        fn get_xattr(&self, _path: &Path, _name: &str) -> io::Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn fork(&self) -> io::Result<ForkResult> {
            Err(io::Error::from_raw_os_error(libc::ENOSYS))
        }
        fn exec(&self, program: &Path, argv: &[String], env: &[String]) -> io::Error {
            self.record(format!("exec {} {argv:?} {env:?}", program.display()));
            io::Error::from_raw_os_error(libc::ENOSYS)
        }
    }
}
