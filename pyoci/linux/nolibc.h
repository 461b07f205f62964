/*
 * What pyoci's small static programs without libc share (pyoci/linux/waiter.c, the waiter;
 * pyoci/linux/trampoline.c, the console scripts' launcher): raw system calls on x86_64 and
 * aarch64, the entry point, and the two functions gcc may call even when freestanding.
 * Each program defines nolibc_main(long *sp): sp points at argc, then argv, NULL, envp, NULL.
 * Built by setup.py (build_native: the one place for the compiler flags).
 */

#ifndef PYOCI_NOLIBC_H
#define PYOCI_NOLIBC_H

__attribute__((noreturn, used)) void nolibc_main(long *sp);
extern void nolibc_restorer(void);

#define NULL ((void *)0)
typedef unsigned long size_t;

#if defined(__x86_64__)
#define SYS_read 0
#define SYS_write 1
#define SYS_close 3
#define SYS_rt_sigaction 13
#define SYS_rt_sigprocmask 14
#define SYS_execve 59
#define SYS_prctl 157
#define SYS_sched_setaffinity 203
#define SYS_exit_group 231
#define SYS_openat 257
#define SYS_seccomp 317
#define SYS_readlinkat 267

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

/* The kernel passes argc at (%rsp); the ABI wants a 16-byte aligned stack at the call. */
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call nolibc_main\n"
	"	hlt\n"
	/* x86_64 refuses to deliver a signal to a handler without SA_RESTORER */
	".global nolibc_restorer\n"
	"nolibc_restorer:\n"
	"	mov $15, %eax\n"	/* rt_sigreturn */
	"	syscall\n"
	"	hlt\n");

#elif defined(__aarch64__)
#define SYS_read 63
#define SYS_write 64
#define SYS_close 57
#define SYS_rt_sigaction 134
#define SYS_rt_sigprocmask 135
#define SYS_execve 221
#define SYS_prctl 167
#define SYS_sched_setaffinity 122
#define SYS_exit_group 94
#define SYS_openat 56
#define SYS_seccomp 277
#define SYS_readlinkat 78

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;

	__asm__ volatile("svc #0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory");
	return x0;
}

__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	mov x29, #0\n"
	"	mov x30, #0\n"
	"	mov x0, sp\n"
	"	bl nolibc_main\n"
	"	brk #0\n"
	".global nolibc_restorer\n"
	"nolibc_restorer:\n"
	"	mov x8, #139\n"		/* rt_sigreturn */
	"	svc #0\n"
	"	brk #0\n");

#else
#error "pyoci's programs without libc: only x86_64 and aarch64 (setup.py then builds none)"
#endif

#define sys1(n, a) sys6(n, (long)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) sys6(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) sys6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) sys6(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

#define AT_FDCWD (-100)
#define O_RDONLY 00
#define O_CLOEXEC 02000000

/* gcc may emit calls to these for struct copies and zeroing even when freestanding */
void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;

	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *p = d;
	const unsigned char *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}

#endif
