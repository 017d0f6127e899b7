//! A streaming tar reader for hostile archives, bounded: headers checksummed, names
//! and extended headers capped, entry data read only through a reader that stops at
//! the entry's end. It reads what Go's `archive/tar` writes (the format of `docker
//! save` and of every layer Docker stores: ustar, PAX and GNU headers) and reads it as
//! Go's reader does where the two could differ (header-only types carry no data
//! whatever their size field says; a PAX `size` overrides the header's; an old-style
//! regular file whose name ends in `/` is a directory). Anything else (sparse files,
//! volume headers, unknown types) is refused rather than guessed at.
#![forbid(unsafe_code)]

use std::io::{self, Read};

pub const BLOCK: u64 = 512;
/// Longest path or link name accepted (PAX or GNU long names included).
pub const MAX_NAME: usize = 4096;
/// Largest PAX extended header (file capabilities and other attributes ride in it).
pub const MAX_PAX: u64 = 1 << 20;

/// The entry types the reader passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    Dir,
    Char,
    Block,
    Fifo,
}

/// One entry's header, with its extended headers applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as stored (not normalised).
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    /// Permission and set-id bits (`0o7777`).
    pub mode: u32,
    /// Bytes of data that follow (0 for the header-only kinds).
    pub size: u64,
    /// A `security.capability` extended attribute (file capabilities) is attached.
    pub capability: bool,
}

/// Why an archive was not read.
#[derive(Debug)]
pub enum Error {
    /// The underlying stream failed.
    Io(io::Error),
    /// The archive is malformed or uses something this reader refuses.
    Bad(String),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::Bad("the archive ends in the middle of an entry".into())
        } else {
            Error::Io(e)
        }
    }
}

fn bad<T>(m: impl Into<String>) -> Result<T, Error> {
    Err(Error::Bad(m.into()))
}

/// The reader. [`Reader::next_entry`] returns each entry's header; [`Reader::data`] reads
/// that entry's data (what is left unread is skipped by the next call to `next`).
pub struct Reader<R> {
    r: R,
    /// Data bytes of the current entry not read yet.
    left: u64,
    /// Padding after the current entry's data.
    pad: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(r: R) -> Self {
        Reader {
            r,
            left: 0,
            pad: 0,
            done: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.r
    }

    /// The current entry's data (at most [`Entry::size`] bytes).
    pub fn data(&mut self) -> Data<'_, R> {
        Data { t: self }
    }

    fn skip(&mut self, n: u64) -> Result<(), Error> {
        let copied = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        if copied != n {
            return bad("the archive ends in the middle of an entry");
        }
        Ok(())
    }

    /// Reads the current entry's data whole, refusing more than `max` bytes.
    fn read_small(&mut self, size: u64, max: u64, what: &str) -> Result<Vec<u8>, Error> {
        if size > max {
            return bad(format!("{what} of {size} bytes (at most {max})"));
        }
        let mut v = Vec::with_capacity(size as usize);
        self.data().read_to_end(&mut v)?;
        if v.len() as u64 != size {
            return bad("the archive ends in the middle of an entry");
        }
        Ok(v)
    }

    fn block(&mut self) -> Result<[u8; 512], Error> {
        let mut h = [0u8; 512];
        self.r.read_exact(&mut h)?;
        Ok(h)
    }

    /// The next entry, or `None` at the end of the archive (a zero block).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, Error> {
        if self.done {
            return Ok(None);
        }
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax_path: Option<Vec<u8>> = None;
        let mut pax_link: Option<Vec<u8>> = None;
        let mut pax_size: Option<u64> = None;
        let mut capability = false;
        let mut extended = false;
        let mut pax_seen = false;
        loop {
            let (left, pad) = (self.left, self.pad);
            self.left = 0;
            self.pad = 0;
            self.skip(left + pad)?;
            let h = self.block()?;
            if h.iter().all(|&b| b == 0) {
                if extended {
                    return bad("an extended header is not followed by an entry");
                }
                self.done = true;
                return Ok(None);
            }
            check_sum(&h)?;
            let flag = h[156];
            let raw_size = number(&h[124..136], "size")?;
            let header_only = matches!(flag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6');
            let size = match (flag, pax_size) {
                (b'x' | b'g' | b'L' | b'K', _) => raw_size,
                (_, _) if header_only => 0,
                (_, Some(s)) => s,
                (_, None) => raw_size,
            };
            self.left = size;
            self.pad = (BLOCK - size % BLOCK) % BLOCK;
            match flag {
                b'x' => {
                    if std::mem::replace(&mut pax_seen, true) {
                        return bad("two PAX headers for one entry");
                    }
                    let data = self.read_small(size, MAX_PAX, "a PAX header")?;
                    for (k, v) in pax_records(&data)? {
                        match k {
                            b"path" => pax_path = Some(name(v)?),
                            b"linkpath" => pax_link = Some(name(v)?),
                            b"size" => pax_size = Some(decimal(v)?),
                            b"SCHILY.xattr.security.capability" => capability = true,
                            _ if k.starts_with(b"GNU.sparse.") => {
                                return bad("a sparse file (not written by Docker)")
                            }
                            _ => {}
                        }
                    }
                    extended = true;
                }
                b'g' => {
                    // global headers: Docker's unpacking skips them, and so does this
                    self.read_small(size, MAX_PAX, "a PAX global header")?;
                }
                b'L' | b'K' => {
                    let mut v = self.read_small(size, MAX_NAME as u64 + 1, "a long name")?;
                    if let Some(end) = v.iter().position(|&b| b == 0) {
                        v.truncate(end);
                    }
                    let v = name(&v)?;
                    let slot = if flag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.replace(v).is_some() {
                        return bad("two long names for one entry");
                    }
                    extended = true;
                }
                _ => {
                    let mut kind = match flag {
                        b'0' | 0 | b'7' => Kind::File,
                        b'1' => Kind::HardLink,
                        b'2' => Kind::Symlink,
                        b'3' => Kind::Char,
                        b'4' => Kind::Block,
                        b'5' => Kind::Dir,
                        b'6' => Kind::Fifo,
                        b'S' => return bad("a sparse file (not written by Docker)"),
                        f => return bad(format!("an entry of unknown type {:?}", f as char)),
                    };
                    let ustar = &h[257..263] == b"ustar\0";
                    let mut path = field(&h[0..100]).to_vec();
                    if ustar {
                        let prefix = field(&h[345..500]);
                        if !prefix.is_empty() {
                            path = [prefix, b"/", &path].concat();
                        }
                    }
                    let path = pax_path.or(long_name).unwrap_or(path);
                    let link = pax_link
                        .or(long_link)
                        .unwrap_or_else(|| field(&h[157..257]).to_vec());
                    if flag == 0 && path.ends_with(b"/") {
                        kind = Kind::Dir;
                        self.left = 0;
                        self.pad = 0;
                    }
                    if path.len() > MAX_NAME || link.len() > MAX_NAME {
                        return bad("a name longer than 4096 bytes");
                    }
                    let mode = number(&h[100..108], "mode")?;
                    return Ok(Some(Entry {
                        path,
                        link,
                        kind,
                        mode: (mode & 0o7777) as u32,
                        size: self.left,
                        capability,
                    }));
                }
            }
        }
    }
}

/// Reads the current entry's data.
pub struct Data<'a, R> {
    t: &'a mut Reader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.t.left.min(usize::MAX as u64) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.t.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.t.left -= n as u64;
        Ok(n)
    }
}

/// A NUL-terminated header field.
fn field(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |end| &b[..end])
}

/// A name from an extended header: no NUL, bounded.
fn name(v: &[u8]) -> Result<Vec<u8>, Error> {
    if v.len() > MAX_NAME || v.contains(&0) {
        return bad("a name longer than 4096 bytes or with a NUL");
    }
    Ok(v.to_vec())
}

fn decimal(v: &[u8]) -> Result<u64, Error> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return bad("a bad number in a PAX header");
    }
    Ok(v.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A numeric header field: octal (spaces and NULs around it), or GNU base-256.
fn number(f: &[u8], what: &str) -> Result<u64, Error> {
    if f[0] & 0x80 != 0 {
        let rest = &f[1..];
        let (high, low) = rest.split_at(rest.len().saturating_sub(8));
        if f[0] != 0x80 || high.iter().any(|&b| b != 0) {
            return bad(format!("a negative or huge {what} field"));
        }
        return Ok(low.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)));
    }
    let s: &[u8] = {
        let start = f.iter().position(|&b| b != b' ').unwrap_or(f.len());
        let f = &f[start..];
        let end = f
            .iter()
            .position(|&b| b == 0 || b == b' ')
            .unwrap_or(f.len());
        if f[end..].iter().any(|&b| b != 0 && b != b' ') {
            return bad(format!("a bad {what} field"));
        }
        &f[..end]
    };
    if !s.iter().all(|b| (b'0'..=b'7').contains(b)) || s.len() > 21 {
        return bad(format!("a bad {what} field"));
    }
    Ok(s.iter().fold(0u64, |n, d| (n << 3) | u64::from(d - b'0')))
}

/// The header checksum, as Go's reader accepts it (unsigned or signed sum).
fn check_sum(h: &[u8; 512]) -> Result<(), Error> {
    let want = number(&h[148..156], "checksum")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if want == unsigned || i64::try_from(want).ok() == Some(signed) {
        Ok(())
    } else {
        bad("a header checksum mismatch (not a tar archive, or a damaged one)")
    }
}

/// PAX records: `LEN KEY=VALUE\n`, LEN counting the whole record.
/// A PAX record: key and value.
type Record<'a> = (&'a [u8], &'a [u8]);

fn pax_records(mut d: &[u8]) -> Result<Vec<Record<'_>>, Error> {
    let mut out = Vec::new();
    while !d.is_empty() {
        let sp = d
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or_else(|| Error::Bad("a bad PAX record".into()))?;
        let len = decimal(&d[..sp])? as usize;
        if len <= sp + 1 || len > d.len() || d[len - 1] != b'\n' {
            return bad("a bad PAX record");
        }
        let rec = &d[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| Error::Bad("a bad PAX record".into()))?;
        out.push((&rec[..eq], &rec[eq + 1..]));
        d = &d[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::tar::{Builder, EntryType, Header};

    fn entries(t: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>, String> {
        let mut r = Reader::new(t);
        let mut out = Vec::new();
        loop {
            match r.next_entry() {
                Ok(Some(e)) => {
                    let mut d = Vec::new();
                    if let Err(e) = r.data().read_to_end(&mut d) {
                        return Err(match Error::from(e) {
                            Error::Bad(m) => m,
                            Error::Io(e) => e.to_string(),
                        });
                    }
                    out.push((e, d));
                }
                Ok(None) => return Ok(out),
                Err(Error::Bad(m)) => return Err(m),
                Err(Error::Io(e)) => return Err(e.to_string()),
            }
        }
    }

    #[test]
    fn reads_what_the_tar_crate_writes_long_names_pax_and_links_included() {
        let mut b = Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(150));
        let mut h = Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o4755);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "etc/passwd", "../x").unwrap();
        b.append_pax_extensions([("SCHILY.xattr.security.capability", &b"\x01"[..])])
            .unwrap();
        let mut h = Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o755);
        b.append_data(&mut h, "bin/ping", &b"p"[..]).unwrap();
        let t = b.into_inner().unwrap();
        let e = entries(&t).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].0.path, long.as_bytes());
        assert_eq!((e[0].0.mode, e[0].1.as_slice()), (0o4755, &b"abc"[..]));
        assert_eq!(e[1].0.kind, Kind::Symlink);
        assert_eq!(e[1].0.link, b"../x");
        assert!(e[2].0.capability && !e[0].0.capability);
    }

    #[test]
    fn header_only_kinds_carry_no_data_whatever_their_size_field_says() {
        // a directory header claiming 512 bytes, followed directly by a file header:
        // Go's reader (and so Docker) reads the file; so must this reader
        let mut dir = Header::new_ustar();
        dir.set_entry_type(EntryType::Directory);
        dir.set_path("etc/").unwrap();
        dir.set_size(512);
        dir.set_cksum();
        let mut b = Builder::new(Vec::new());
        let mut h = Header::new_ustar();
        h.set_size(2);
        b.append_data(&mut h, "etc/passwd", &b"ok"[..]).unwrap();
        let mut t = dir.as_bytes().to_vec();
        t.extend(b.into_inner().unwrap());
        let e = entries(&t).unwrap();
        assert_eq!(e[0].0.kind, Kind::Dir);
        assert_eq!(e[1].0.path, b"etc/passwd");
        assert_eq!(e[1].1, b"ok");
    }

    #[test]
    fn refuses_bad_checksums_sparse_files_unknown_types_and_truncation() {
        let mut b = Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(600);
        b.append_data(&mut h, "f", &[7u8; 600][..]).unwrap();
        let t = b.into_inner().unwrap();
        let mut broken = t.clone();
        broken[3] ^= 1;
        assert!(entries(&broken).unwrap_err().contains("checksum"));
        assert!(entries(&t[..700]).unwrap_err().contains("ends"));
        for flag in [b'S', b'V', b'Z'] {
            let mut h = Header::new_gnu();
            h.set_path("x").unwrap();
            h.set_size(0);
            h.as_mut_bytes()[156] = flag;
            h.set_cksum();
            let mut t = h.as_bytes().to_vec();
            t.extend([0u8; 1024]);
            assert!(entries(&t).is_err(), "{}", flag as char);
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"0000644\0", "m").unwrap(), 0o644);
        assert_eq!(number(b"  644 \0\0", "m").unwrap(), 0o644);
        assert_eq!(number(b"\0\0\0\0\0\0\0\0", "m").unwrap(), 0);
        assert!(number(b"0008\0\0\0\0", "m").is_err());
        assert!(number(b"12 3\0\0\0\0", "m").is_err());
        let mut b256 = [0u8; 12];
        b256[0] = 0x80;
        b256[11] = 5;
        b256[7] = 1;
        assert_eq!(number(&b256, "s").unwrap(), (1 << 32) + 5);
        b256[0] = 0xff;
        assert!(number(&b256, "s").is_err());
        // base-256 in an 8-byte field (mode)
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 1, 0xed], "m").unwrap(), 0o755);
    }
}
