//! A tar header writer with exact control over every byte: ustar headers, PAX records only where a
//! value does not fit (long paths, big ids, xattrs), no user/group names, no atime/ctime. The `tar`
//! crate is used for reading; writing is done here so that two identical trees give identical bytes.

use std::io::{self, Read, Write};

pub(crate) const BLOCK: usize = 512;

/// The tar typeflag of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// One entry's metadata. `path` has no leading `/` or `./`; directories get their trailing `/` here.
#[derive(Debug)]
pub(crate) struct Header<'a> {
    pub(crate) path: &'a [u8],
    pub(crate) link: &'a [u8],
    pub(crate) kind: Kind,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
    pub(crate) dev_major: u64,
    pub(crate) dev_minor: u64,
    /// Sorted by name by the caller.
    pub(crate) xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

impl<'a> Header<'a> {
    pub(crate) fn file(path: &'a [u8], size: u64) -> Self {
        Header {
            path,
            link: b"",
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: &[],
        }
    }

    pub(crate) fn dir(path: &'a [u8]) -> Self {
        Header {
            kind: Kind::Dir,
            mode: 0o755,
            ..Header::file(path, 0)
        }
    }
}

const MAX_OCTAL_11: u64 = 0o77777777777;

/// Writes `value` as zero-padded octal filling `field` but its last byte, which stays NUL.
/// Returns false when it does not fit (the caller then uses a PAX record).
fn octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    // Filled from the last digit up, without a formatter: several fields per entry add up
    // over a layer of many files.
    let mut rest = value;
    for byte in field[..digits].iter_mut().rev() {
        *byte = b'0' + (rest & 7) as u8;
        rest >>= 3;
    }
    field[digits] = 0;
    rest == 0
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // The length prefix counts itself, so find the fixed point.
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Splits a long path into ustar prefix (<=155) and name (<=100) at a `/`, if possible.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((b"", path));
    }
    // The trailing slash of a directory belongs to the name part.
    let search_end = path.len().saturating_sub(1);
    (0..search_end)
        .rev()
        .filter(|&i| path[i] == b'/')
        .map(|i| (&path[..i], &path[i + 1..]))
        .find(|(prefix, name)| prefix.len() <= 155 && name.len() <= 100 && !name.is_empty())
}

fn raw_header(
    name: &[u8],
    prefix: &[u8],
    link: &[u8],
    flag: u8,
    h: &Header<'_>,
    pax: &mut Vec<u8>,
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    if !octal(&mut b[108..116], h.uid) {
        pax_record(pax, b"uid", h.uid.to_string().as_bytes());
        octal(&mut b[108..116], 0);
    }
    if !octal(&mut b[116..124], h.gid) {
        pax_record(pax, b"gid", h.gid.to_string().as_bytes());
        octal(&mut b[116..124], 0);
    }
    if !octal(&mut b[124..136], h.size) {
        pax_record(pax, b"size", h.size.to_string().as_bytes());
        octal(&mut b[124..136], 0);
    }
    let mtime_fits = h.mtime >= 0 && (h.mtime as u64) <= MAX_OCTAL_11;
    if mtime_fits {
        octal(&mut b[136..148], h.mtime as u64);
    } else {
        pax_record(pax, b"mtime", h.mtime.to_string().as_bytes());
        octal(&mut b[136..148], 0);
    }
    b[156] = flag;
    b[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    for (field, value, key) in [
        (329..337, h.dev_major, &b"SCHILY.devmajor"[..]),
        (337..345, h.dev_minor, &b"SCHILY.devminor"[..]),
    ] {
        if !octal(&mut b[field.clone()], value) {
            pax_record(pax, key, value.to_string().as_bytes());
            octal(&mut b[field], 0);
        }
    }
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    b
}

fn checksum(b: &mut [u8; BLOCK]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    // Six digits, NUL, space (a header's sum is at most 512 * 255, well within six).
    octal(&mut b[148..155], u64::from(sum));
    b[155] = b' ';
}

/// Writes the header block(s) of one entry (a PAX `x` header first when needed).
pub(crate) fn write_header<W: Write>(w: &mut W, h: &Header<'_>) -> io::Result<()> {
    let mut pax = Vec::new();
    let (prefix, name) = match ustar_split(h.path) {
        Some(split) => split,
        None => {
            pax_record(&mut pax, b"path", h.path);
            (&b""[..], &h.path[..h.path.len().min(100)])
        }
    };
    if h.link.len() > 100 {
        pax_record(&mut pax, b"linkpath", h.link);
    }
    for (key, value) in h.xattrs {
        let mut k = b"SCHILY.xattr.".to_vec();
        k.extend_from_slice(key);
        pax_record(&mut pax, &k, value);
    }
    let mut block = raw_header(name, prefix, h.link, h.kind.flag(), h, &mut pax);
    if !pax.is_empty() {
        // The PAX header's own name: deterministic, derived from the entry's name.
        let mut pax_name = b"PaxHeaders/".to_vec();
        pax_name.extend_from_slice(&name[..name.len().min(89)]);
        let pax_header = Header {
            path: &pax_name,
            link: b"",
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: pax.len() as u64,
            mtime: h.mtime.clamp(0, MAX_OCTAL_11 as i64),
            dev_major: 0,
            dev_minor: 0,
            xattrs: &[],
        };
        let mut ignored = Vec::new();
        let mut pb = raw_header(&pax_name, b"", b"", b'x', &pax_header, &mut ignored);
        checksum(&mut pb);
        w.write_all(&pb)?;
        w.write_all(&pax)?;
        write_padding(w, pax.len() as u64)?;
    }
    checksum(&mut block);
    w.write_all(&block)
}

/// Zero bytes after `size` bytes of entry data, up to the next block boundary.
pub(crate) fn write_padding<W: Write>(w: &mut W, size: u64) -> io::Result<()> {
    let rem = (size % BLOCK as u64) as usize;
    if rem != 0 {
        w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// Copies exactly `size` bytes of entry data and the padding; fails if the source is shorter or longer.
pub(crate) fn write_data<W: Write, R: Read>(w: &mut W, mut data: R, size: u64) -> io::Result<()> {
    let copied = io::copy(&mut (&mut data).take(size), w)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("expected {size} bytes, found {copied} (file changed while being read)"),
        ));
    }
    write_padding(w, size)
}

/// The end-of-archive marker: two zero blocks.
pub(crate) fn write_end<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(&[0u8; BLOCK * 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields_are_zero_padded_and_refuse_what_does_not_fit() {
        for value in [0u64, 1, 7, 8, 0o644, 1_795_414_634, MAX_OCTAL_11] {
            let mut field = [0xffu8; 12];
            assert!(octal(&mut field, value));
            assert_eq!(&field[..11], format!("{value:011o}").as_bytes());
            assert_eq!(field[11], 0);
        }
        let mut field = [0u8; 8];
        assert!(octal(&mut field, 0o7777777));
        assert!(
            !octal(&mut field, 0o10000000),
            "eight digits in a 7-digit field"
        );
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", &[b'a'; 91]);
        // 98 bytes without the prefix: two digits would make 100, so it takes three and 101.
        assert_eq!(out.len(), 101);
        assert!(out.starts_with(b"101 path="));
        let mut short = Vec::new();
        pax_record(&mut short, b"uid", b"7");
        assert_eq!(short, b"8 uid=7\n");
    }

    #[test]
    fn long_paths_split_or_use_pax() {
        let long = [b"d".repeat(120), b"/".to_vec(), b"f".repeat(50)].concat();
        let (prefix, name) = ustar_split(&long).unwrap();
        assert_eq!(prefix.len(), 120);
        assert_eq!(name.len(), 50);
        assert!(ustar_split(&b"x".repeat(300)).is_none());
    }
}
