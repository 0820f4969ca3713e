    .section .note.GNU-stack,"",@progbits
/*
 * kvm_util_guest.S - entry of the test guest payload (linked at
 * KVMTEST_CODE_GPA).  The vCPU starts in ring 0 at kvmtest_r0_entry with
 * RSP pointing at an iretq frame the host built; the single emulated
 * instruction drops to ring 3 at the guest routine named in the frame.
 */
    .text
    .code64
    .globl kvmtest_r0_entry
kvmtest_r0_entry:
    iretq
