/*
 * driver.c - embeds sandbox/driver.py, the Python side of code-interpreter sessions, in the
 * binary: the sandbox runs it with `python3 -c`, so there is no file to install or to find at
 * run time, and the code that runs is always the code that was built. The Makefile makes this
 * object depend on driver.py.
 */
#include "sbx_int.h"

__asm__(".section .rodata\n"
        ".global sbx__driver_py\n"
        ".type sbx__driver_py, @object\n"
        "sbx__driver_py:\n"
        ".incbin \"sandbox/driver.py\"\n"
        ".byte 0\n"
        ".size sbx__driver_py, . - sbx__driver_py\n"
        ".previous\n");
