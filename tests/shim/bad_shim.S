/* A deliberately wrong "shim": shows check_disasm.py catches int3. */
    .text
    out %al, $0xc3
    int3
    iretq
