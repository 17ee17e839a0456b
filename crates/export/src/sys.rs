//! Extended attributes through libc: nix has no xattr calls. This is the crate's only unsafe code.

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

/// All extended attributes of `path` (not following a final symlink), sorted by name.
pub(crate) fn list_xattrs(path: &CStr) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `path` is NUL-terminated and `names` is a writable buffer of the length passed.
        let n = unsafe { libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = cname(name)?;
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: both strings are NUL-terminated; `value` is writable for the length passed.
            let n = unsafe {
                libc::lgetxattr(
                    path.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
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
