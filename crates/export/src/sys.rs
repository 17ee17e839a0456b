//! Extended attributes through libc (nix has no xattr calls), and a read that never waits for
//! the disk. This is the crate's only unsafe code (with the read-ahead's fadvise).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "xattr name contains a NUL byte",
        )
    })
}

/// What extended attributes are read from: a path (not following a final symlink) or an open
/// file or directory.
#[derive(Clone, Copy)]
pub(crate) enum XattrOf<'a> {
    Path(&'a CStr),
    Fd(BorrowedFd<'a>),
}

impl XattrOf<'_> {
    fn list(self, buf: &mut [u8]) -> isize {
        match self {
            // SAFETY: the path is NUL-terminated and `buf` is writable for the length passed.
            XattrOf::Path(p) => unsafe {
                libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            },
            // SAFETY: the descriptor is open for the borrow; `buf` is writable for its length.
            XattrOf::Fd(fd) => unsafe {
                libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
            },
        }
    }

    fn get(self, name: &CStr, buf: &mut [u8]) -> isize {
        match self {
            // SAFETY: both strings are NUL-terminated; `buf` is writable for the length passed.
            XattrOf::Path(p) => unsafe {
                libc::lgetxattr(
                    p.as_ptr(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            },
            // SAFETY: the descriptor is open for the borrow; the name is NUL-terminated; `buf`
            // is writable for the length passed.
            XattrOf::Fd(fd) => unsafe {
                libc::fgetxattr(
                    fd.as_raw_fd(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            },
        }
    }
}

/// All extended attributes of `of`, sorted by name.
pub(crate) fn list_xattrs(of: XattrOf<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    // Most files have none: a small buffer on the stack answers them without an allocation.
    let mut small = [0u8; 256];
    let mut big = Vec::new();
    let names: &[u8] = loop {
        let buf: &mut [u8] = if big.is_empty() { &mut small } else { &mut big };
        let n = of.list(buf);
        if n >= 0 {
            let len = n as usize;
            break if big.is_empty() {
                &small[..len]
            } else {
                &big[..len]
            };
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => big.resize((big.len() * 4).max(4096), 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = cname(name)?;
        let mut value = vec![0u8; 256];
        loop {
            let n = of.get(&cname, &mut value);
            if n >= 0 {
                value.truncate(n as usize);
                out.push((name.to_vec(), value));
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 4, 0),
                // Removed between list and get: nothing to record.
                Some(libc::ENODATA) => break,
                _ => return Err(err),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Sets an attribute on `path` without following a final symlink.
pub(crate) fn set_xattr_path(path: &CStr, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = cname(name)?;
    // SAFETY: both strings are NUL-terminated; `value` is readable for the length passed.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets an attribute on an open file or directory.
pub(crate) fn set_xattr_fd(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = cname(name)?;
    // SAFETY: `fd` is open for the borrow's lifetime; the name is NUL-terminated; `value` is
    // readable for the length passed.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `openat` returning an owned descriptor.
pub(crate) fn openat(
    dir: BorrowedFd<'_>,
    name: &[u8],
    flags: nix::fcntl::OFlag,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let raw = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        flags | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    // SAFETY: `raw` was just returned by a successful openat and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
}

/// The entries of the directory open as `dir` (not `.` and `..`), sorted by name bytes, each
/// with the type its directory entry gives (`None` where the filesystem does not say).
pub(crate) fn list_dir(dir: &std::fs::File) -> io::Result<Vec<(Vec<u8>, Option<nix::dir::Type>)>> {
    use nix::fcntl::OFlag;
    // A descriptor of its own for the listing: nix's Dir owns (and closes) the one it reads.
    let mut listing = nix::dir::Dir::openat(
        Some(dir.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((name.to_vec(), entry.file_type()));
        }
    }
    names.sort_by(|(a, _), (b, _)| a.cmp(b));
    Ok(names)
}

/// A read from `file`'s current position that returns only what the page cache holds:
/// `Ok(None)` when that is nothing (reading would wait for the disk), else what a `read` gives.
pub(crate) fn read_cached(file: &std::fs::File, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which is valid for writes of its length for the call; the
    // descriptor is open while `file` is borrowed. Offset -1 reads at (and moves) the file's
    // position, as read(2) does.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EAGAIN) => Ok(None),
        // A kernel or filesystem without RWF_NOWAIT: an ordinary read is the answer.
        e if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            io::Read::read(&mut &*file, buf).map(Some)
        }
        e => Err(e),
    }
}
