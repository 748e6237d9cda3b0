//! The cgroup v2 enforcer's code: a [`Table`] compiled to a `BPF_PROG_TYPE_CGROUP_DEVICE`
//! program, emitted as raw eBPF instructions (a dozen opcodes do not justify libbpf or aya).
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! (`access_type` = access bits << 16 | device type), tests each exception in turn and returns
//! the opposite of the default on the first that matches, else the default (1 allows, 0 denies).
//! Exceptions never contradict each other (see [`Table`]), so their order does not matter. Only
//! 32-bit context loads, immediate compares and forward jumps: what the verifier of every kernel
//! since 4.15 accepts.

use super::rules::{Access, Table};

/// One `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// `dst_reg:4, src_reg:4` bitfields, in the target's bitfield order.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// The kernel reads instructions as 8-byte records.
const _: () = assert!(std::mem::size_of::<Insn>() == 8);

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x01 | 0x60; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_MOV_X: u8 = 0x07 | 0xb0 | 0x08;
const ALU64_MOV_K: u8 = 0x07 | 0xb0;
const ALU64_AND_K: u8 = 0x07 | 0x50;
const ALU64_RSH_K: u8 = 0x07 | 0x70;
const JMP_JEQ_K: u8 = 0x05 | 0x10;
const JMP_JNE_K: u8 = 0x05 | 0x50;
const JMP_EXIT: u8 = 0x05 | 0x90;

// Registers: r1 holds the context on entry and is scratch after the loads.
const R0: u8 = 0;
const R1: u8 = 1;
const R_ACCESS: u8 = 2;
const R_TYPE: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        let regs = if cfg!(target_endian = "little") {
            (dst & 0xf) | (src << 4)
        } else {
            (dst << 4) | (src & 0xf)
        };
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }
    pub fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0xf
        } else {
            self.regs >> 4
        }
    }
    pub fn src(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0xf
        }
    }
}

/// A conditional forward jump whose target (the next exception's block) is filled in later.
enum Step {
    Insn(Insn),
    SkipUnless { code: u8, reg: u8, imm: i32 },
}

/// Compiles `t`. Device numbers fit in an `imm` (majors are 12 bits, minors 20).
pub fn compile(t: &Table) -> Vec<Insn> {
    let mut out = vec![
        Insn::new(LDX_MEM_W, R_ACCESS, R1, 0, 0),
        Insn::new(ALU64_MOV_X, R_TYPE, R_ACCESS, 0, 0),
        Insn::new(ALU64_AND_K, R_TYPE, 0, 0, 0xffff),
        Insn::new(ALU64_RSH_K, R_ACCESS, 0, 0, 16),
        Insn::new(LDX_MEM_W, R_MAJOR, R1, 4, 0),
        Insn::new(LDX_MEM_W, R_MINOR, R1, 8, 0),
    ];
    let hit = i32::from(!t.default_allow);
    for e in &t.exceptions {
        let mut block: Vec<Step> = Vec::new();
        if let Some(code) = e.kind.bpf_code() {
            block.push(skip_unless_eq(R_TYPE, code));
        }
        if t.default_allow {
            // Denied when any requested bit is one of the exception's.
            block.push(Step::Insn(Insn::new(ALU64_MOV_X, R1, R_ACCESS, 0, 0)));
            block.push(Step::Insn(Insn::new(
                ALU64_AND_K,
                R1,
                0,
                0,
                i32::from(e.access.bits()),
            )));
            block.push(Step::SkipUnless {
                code: JMP_JEQ_K,
                reg: R1,
                imm: 0,
            });
        } else if e.access != Access::ALL {
            // Allowed only when every requested bit is one of the exception's.
            let missing = !e.access.bits() & Access::ALL.bits();
            block.push(Step::Insn(Insn::new(ALU64_MOV_X, R1, R_ACCESS, 0, 0)));
            block.push(Step::Insn(Insn::new(
                ALU64_AND_K,
                R1,
                0,
                0,
                i32::from(missing),
            )));
            block.push(Step::SkipUnless {
                code: JMP_JNE_K,
                reg: R1,
                imm: 0,
            });
        }
        if let Some(m) = e.major {
            block.push(skip_unless_eq(R_MAJOR, m));
        }
        if let Some(m) = e.minor {
            block.push(skip_unless_eq(R_MINOR, m));
        }
        block.push(Step::Insn(Insn::new(ALU64_MOV_K, R0, 0, 0, hit)));
        block.push(Step::Insn(Insn::new(JMP_EXIT, 0, 0, 0, 0)));
        let len = block.len();
        for (i, step) in block.into_iter().enumerate() {
            out.push(match step {
                Step::Insn(insn) => insn,
                Step::SkipUnless { code, reg, imm } => {
                    // Jump offsets count from the next instruction; a block is a few insns.
                    let off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
                    Insn::new(code, reg, 0, off, imm)
                }
            });
        }
    }
    out.push(Insn::new(ALU64_MOV_K, R0, 0, 0, i32::from(t.default_allow)));
    out.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    out
}

/// Jump past the block when `reg != value`.
fn skip_unless_eq(reg: u8, value: u32) -> Step {
    Step::SkipUnless {
        code: JMP_JNE_K,
        reg,
        // Device numbers are < 2^20, so this never wraps.
        imm: i32::try_from(value).unwrap_or(i32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::rules::{default_rules, Kind, Rule, Table};

    /// Text for the opcodes `compile` emits, for golden comparisons.
    fn disasm(p: &[Insn]) -> Vec<String> {
        p.iter()
            .map(|i| {
                let (d, s) = (i.dst(), i.src());
                match i.code {
                    LDX_MEM_W => format!("r{d} = *(u32 *)(r{s} + {})", i.off),
                    ALU64_MOV_X => format!("r{d} = r{s}"),
                    ALU64_MOV_K => format!("r{d} = {}", i.imm),
                    ALU64_AND_K => format!("r{d} &= {:#x}", i.imm),
                    ALU64_RSH_K => format!("r{d} >>= {}", i.imm),
                    JMP_JEQ_K => format!("if r{d} == {} goto +{}", i.imm, i.off),
                    JMP_JNE_K => format!("if r{d} != {} goto +{}", i.imm, i.off),
                    JMP_EXIT => "exit".to_string(),
                    c => format!("unknown {c:#x}"),
                }
            })
            .collect()
    }

    /// Runs `p` on one context as the kernel would (for the opcodes above).
    fn run(p: &[Insn], access_type: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access_type, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = p[pc];
            let (d, s) = (usize::from(i.dst()), usize::from(i.src()));
            let imm = i.imm as i64 as u64;
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(s, 1, "only context loads");
                    r[d] = u64::from(ctx[usize::try_from(i.off).unwrap() / 4]);
                }
                ALU64_MOV_X => r[d] = r[s],
                ALU64_MOV_K => r[d] = imm,
                ALU64_AND_K => r[d] &= imm,
                ALU64_RSH_K => r[d] >>= imm,
                JMP_JEQ_K if r[d] == imm => pc += usize::try_from(i.off).unwrap(),
                JMP_JNE_K if r[d] != imm => pc += usize::try_from(i.off).unwrap(),
                JMP_JEQ_K | JMP_JNE_K => {}
                JMP_EXIT => return r[0],
                c => panic!("unknown opcode {c:#x}"),
            }
        }
        panic!("no exit");
    }

    #[test]
    fn golden_program_for_a_tiny_list() {
        let t = Table::fold(&[
            Rule::parse("a", false).unwrap(),
            Rule::parse("c 1:3 rwm", true).unwrap(),
            Rule::parse("b *:* m", true).unwrap(),
        ]);
        let text = disasm(&compile(&t));
        let want = [
            "r2 = *(u32 *)(r1 + 0)",
            "r3 = r2",
            "r3 &= 0xffff",
            "r2 >>= 16",
            "r4 = *(u32 *)(r1 + 4)",
            "r5 = *(u32 *)(r1 + 8)",
            // c 1:3 rwm
            "if r3 != 2 goto +4",
            "if r4 != 1 goto +3",
            "if r5 != 3 goto +2",
            "r0 = 1",
            "exit",
            // b *:* m: any requested bit outside m misses
            "if r3 != 1 goto +5",
            "r1 = r2",
            "r1 &= 0x6",
            "if r1 != 0 goto +2",
            "r0 = 1",
            "exit",
            // default
            "r0 = 0",
            "exit",
        ];
        assert_eq!(text, want);
    }

    /// The program and the table agree on every type, on access sets, and on device numbers
    /// inside and outside each rule, for the defaults and for an allow-default list.
    #[test]
    fn program_agrees_with_the_table() {
        let r = |l: &str, allow| Rule::parse(l, allow).unwrap();
        let lists = [
            default_rules(),
            vec![
                r("c 1:3 rw", false),
                r("b 8:* w", false),
                r("a 7:* m", false),
            ],
            vec![r("a", false), r("a *:* r", true), r("c 4:* rwm", true)],
            vec![],
        ];
        for rules in lists {
            let t = Table::fold(&rules);
            let p = compile(&t);
            for kind in [Kind::Char, Kind::Block] {
                for acc in 0..8u8 {
                    for major in [0, 1, 4, 5, 7, 8, 10, 136, 4095] {
                        for minor in [0, 1, 3, 5, 9, 200, 229, 1_048_575] {
                            let a = Access::from_bits(acc);
                            let at = u32::from(acc) << 16 | kind.bpf_code().unwrap();
                            let got = run(&p, at, major, minor) == 1;
                            let want = t.permits(kind, major, minor, a);
                            assert_eq!(got, want, "{kind:?} {major}:{minor} {a} in {t:?}");
                        }
                    }
                }
            }
        }
    }
}
