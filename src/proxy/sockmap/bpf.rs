//! The kernel side of the sockmap fast path: two `SOCKHASH` maps and an `sk_skb` verdict program,
//! assembled here (no compiler at build time) and loaded with the raw `bpf()` system call.
//!
//! The verdict program runs for every segment a paired socket receives. It looks up the socket's own
//! cookie in the `peers` map, which holds each socket's peer under that cookie, and redirects the
//! bytes to the peer's egress: `return bpf_sk_redirect_hash(skb, &peers, &cookie(skb), 0)`. The
//! program is attached to a second map, `verdict`: a socket gets the program only when it is put
//! there, and sinew puts a pair there only once both are in `peers`, so no verdict ever runs without
//! the peer to send to (a redirect to a missing key drops the bytes).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `BPF_MAP_CREATE`.
const MAP_CREATE: i32 = 0;
/// `BPF_MAP_UPDATE_ELEM`.
const MAP_UPDATE_ELEM: i32 = 2;
/// `BPF_MAP_DELETE_ELEM`.
const MAP_DELETE_ELEM: i32 = 3;
/// `BPF_PROG_LOAD`.
const PROG_LOAD: i32 = 5;
/// `BPF_PROG_ATTACH`.
const PROG_ATTACH: i32 = 8;
/// `BPF_MAP_TYPE_SOCKHASH`.
const MAP_TYPE_SOCKHASH: u32 = 18;
/// `BPF_PROG_TYPE_SK_SKB`.
const PROG_TYPE_SK_SKB: u32 = 14;
/// `BPF_SK_SKB_VERDICT`: the verdict without the stream parser (whole receive queue per wake-up).
const ATTACH_SK_SKB_VERDICT: u32 = 38;
/// `BPF_NOEXIST`: an insert fails if the key is there.
const NOEXIST: u64 = 1;
/// Helper `bpf_get_socket_cookie`.
const HELPER_GET_SOCKET_COOKIE: i32 = 46;
/// Helper `bpf_sk_redirect_hash`.
const HELPER_SK_REDIRECT_HASH: i32 = 72;

/// The size of every attribute block passed to `bpf()` (larger than any the kernel reads; the
/// unused tail is zero, which the kernel requires).
const ATTR_SIZE: usize = 128;

/// Errors setting up or using the maps and program.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// A `bpf()` command failed.
    #[error("bpf {command}: {source}")]
    Syscall {
        /// The command that failed.
        command: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// The verifier refused the program.
    #[error("bpf program refused: {source}; verifier: {log}")]
    Verifier {
        /// The system's error.
        source: io::Error,
        /// The verifier's log.
        log: String,
    },
}

/// One eBPF instruction, as the kernel reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    /// Opcode.
    code: u8,
    /// Destination register in the low nibble, source in the high one.
    regs: u8,
    /// Signed offset.
    off: i16,
    /// Signed immediate.
    imm: i32,
}

/// A register of the eBPF machine.
#[derive(Clone, Copy)]
enum Reg {
    R0 = 0,
    R1 = 1,
    R2 = 2,
    R3 = 3,
    R4 = 4,
    R6 = 6,
    R10 = 10,
}

impl Insn {
    /// An instruction from its fields.
    const fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (dst as u8) | ((src as u8) << 4),
            off,
            imm,
        }
    }
    /// `dst = src` (64-bit).
    const fn mov(dst: Reg, src: Reg) -> Insn {
        Insn::new(0xbf, dst, src, 0, 0)
    }
    /// `dst = imm` (64-bit).
    const fn mov_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(0xb7, dst, Reg::R0, 0, imm)
    }
    /// `dst += imm` (64-bit).
    const fn add_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(0x07, dst, Reg::R0, 0, imm)
    }
    /// `*(u64 *)(dst + off) = src`.
    const fn store64(dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::new(0x7b, dst, src, off, 0)
    }
    /// Calls helper `id`.
    const fn call(id: i32) -> Insn {
        Insn::new(0x85, Reg::R0, Reg::R0, 0, id)
    }
    /// Returns `r0`.
    const fn exit() -> Insn {
        Insn::new(0x95, Reg::R0, Reg::R0, 0, 0)
    }
    /// `dst = map` (an `ld_imm64` with `BPF_PSEUDO_MAP_FD`: two instruction slots).
    const fn load_map(dst: Reg, map: RawFd) -> [Insn; 2] {
        [
            Insn::new(0x18, dst, Reg::R1, 0, map),
            Insn::new(0, Reg::R0, Reg::R0, 0, 0),
        ]
    }
}

/// The verdict program for a `peers` map at `peers`.
pub fn verdict_program(peers: RawFd) -> Vec<Insn> {
    let [map_lo, map_hi] = Insn::load_map(Reg::R2, peers);
    vec![
        Insn::mov(Reg::R6, Reg::R1),
        Insn::call(HELPER_GET_SOCKET_COOKIE),
        Insn::store64(Reg::R10, -8, Reg::R0),
        Insn::mov(Reg::R1, Reg::R6),
        map_lo,
        map_hi,
        Insn::mov(Reg::R3, Reg::R10),
        Insn::add_imm(Reg::R3, -8),
        // Flags 0: the peer's egress (BPF_F_INGRESS would queue the bytes for reading on the peer).
        Insn::mov_imm(Reg::R4, 0),
        Insn::call(HELPER_SK_REDIRECT_HASH),
        Insn::exit(),
    ]
}

/// An attribute block for `bpf()`, zeroed, filled field by field at the kernel's offsets.
#[repr(C, align(8))]
struct Attr([u8; ATTR_SIZE]);

impl Attr {
    /// A zeroed block.
    fn new() -> Attr {
        Attr([0; ATTR_SIZE])
    }
    /// Writes `v` at byte `at`.
    fn u32(mut self, at: usize, v: u32) -> Attr {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    /// Writes `v` at byte `at`.
    fn u64(mut self, at: usize, v: u64) -> Attr {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

/// Runs `bpf(command, attr)`.
fn bpf(command: i32, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a live, writable block of ATTR_SIZE bytes laid out as the kernel's `union
    // bpf_attr` for `command`; every pointer written into it (keys, values, instructions, log) points
    // to memory that outlives this call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.0.as_mut_ptr(),
            ATTR_SIZE as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Runs a `bpf()` command that returns a new descriptor.
fn bpf_fd(command: i32, attr: &mut Attr) -> io::Result<OwnedFd> {
    let fd = bpf(command, attr)?;
    // SAFETY: MAP_CREATE and PROG_LOAD return a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A `SOCKHASH` keyed by a socket cookie (`u64`), holding socket descriptors (`u32`).
pub struct SockHash {
    /// The map.
    fd: OwnedFd,
}

impl SockHash {
    /// Creates a map of up to `entries` sockets.
    pub fn create(entries: u32) -> Result<SockHash, BpfError> {
        let mut attr = Attr::new()
            .u32(0, MAP_TYPE_SOCKHASH)
            .u32(4, 8)
            .u32(8, 4)
            .u32(12, entries);
        let fd = bpf_fd(MAP_CREATE, &mut attr).map_err(|source| BpfError::Syscall {
            command: "map create",
            source,
        })?;
        Ok(SockHash { fd })
    }

    /// Puts `socket` in the map under `key`.
    pub fn insert(&self, key: u64, socket: RawFd) -> io::Result<()> {
        let value = socket as u32;
        let mut attr = Attr::new()
            .u32(0, self.fd.as_raw_fd() as u32)
            .u64(8, &key as *const u64 as u64)
            .u64(16, &value as *const u32 as u64)
            .u64(24, NOEXIST);
        bpf(MAP_UPDATE_ELEM, &mut attr).map(drop)
    }

    /// Takes the socket under `key` out of the map.
    pub fn remove(&self, key: u64) -> io::Result<()> {
        let mut attr = Attr::new()
            .u32(0, self.fd.as_raw_fd() as u32)
            .u64(8, &key as *const u64 as u64);
        bpf(MAP_DELETE_ELEM, &mut attr).map(drop)
    }

    /// The map's descriptor.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Loads `insns` as an `sk_skb` program and attaches it as the verdict of `map`.
pub fn attach_verdict(insns: &[Insn], map: &SockHash) -> Result<OwnedFd, BpfError> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let load = |log_level: u32, log: &mut [u8]| {
        let mut attr = Attr::new()
            .u32(0, PROG_TYPE_SK_SKB)
            .u32(4, insns.len() as u32)
            .u64(8, insns.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64);
        if log_level > 0 {
            // The kernel refuses a log buffer without a log level.
            attr = attr
                .u32(24, log_level)
                .u32(28, log.len() as u32)
                .u64(32, log.as_mut_ptr() as u64);
        }
        bpf_fd(PROG_LOAD, &mut attr)
    };
    let prog = match load(0, &mut log) {
        Ok(prog) => prog,
        Err(first) => {
            // Again with the verifier's log, for the error message.
            let _ = load(1, &mut log);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            return Err(BpfError::Verifier {
                source: first,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            });
        }
    };
    let mut attr = Attr::new()
        .u32(0, map.raw() as u32)
        .u32(4, prog.as_raw_fd() as u32)
        .u32(8, ATTACH_SK_SKB_VERDICT);
    bpf(PROG_ATTACH, &mut attr).map_err(|source| BpfError::Syscall {
        command: "prog attach",
        source,
    })?;
    Ok(prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        let i = Insn::store64(Reg::R10, -8, Reg::R0);
        assert_eq!((i.code, i.regs, i.off, i.imm), (0x7b, 0x0a, -8, 0));
        let [lo, hi] = Insn::load_map(Reg::R2, 7);
        assert_eq!((lo.code, lo.regs, lo.imm), (0x18, 0x12, 7));
        assert_eq!(hi, Insn::new(0, Reg::R0, Reg::R0, 0, 0));
        let program = verdict_program(7);
        assert_eq!(program.len(), 11);
        assert_eq!(program.last(), Some(&Insn::exit()));
    }
}
