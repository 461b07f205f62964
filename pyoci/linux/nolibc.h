/*
 * What pyoci's small static programs without libc share (pyoci/linux/waiter.c, the waiter;
 * pyoci/linux/trampoline.c, the console scripts' launcher): raw system calls on x86_64 and
 * aarch64, the entry point, the two functions gcc may call even when freestanding, and the
 * one-line error messages (fail3).
 * Each program defines nolibc_main(long *sp): sp points at argc, then argv, NULL, envp, NULL.
 * Built by setup.py (compile_program, with FLAGS: the one place for the compiler flags).
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

#ifndef NOLIBC_FAIL_STATUS
#define NOLIBC_FAIL_STATUS 1
#endif

static char line[4096];
static size_t line_len;

static inline void put(const char *s)
{
	while (*s && line_len < sizeof(line) - 2)
		line[line_len++] = *s++;
}

/* v in base 10 or 16 into buf (24 bytes); returns where the digits start */
static inline const char *utoa(unsigned long v, unsigned base, char *buf)
{
	int i = 23;

	buf[i] = 0;
	do {
		buf[--i] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v && i > 0);
	return buf + i;
}

/* The strings Python's os.strerror gives (glibc's) for what these calls can return. */
static inline void put_error(long err)
{
	static const struct { int n; const char *s; } tab[] = {
		{1, "Operation not permitted"}, {2, "No such file or directory"},
		{3, "No such process"}, {4, "Interrupted system call"}, {5, "Input/output error"},
		{6, "No such device or address"}, {7, "Argument list too long"},
		{8, "Exec format error"}, {9, "Bad file descriptor"},
		{12, "Cannot allocate memory"}, {13, "Permission denied"}, {14, "Bad address"},
		{16, "Device or resource busy"}, {19, "No such device"}, {20, "Not a directory"},
		{21, "Is a directory"}, {22, "Invalid argument"},
		{23, "Too many open files in system"}, {24, "Too many open files"},
		{26, "Text file busy"}, {32, "Broken pipe"}, {36, "File name too long"},
		{38, "Function not implemented"}, {40, "Too many levels of symbolic links"},
		{80, "Accessing a corrupted shared library"},
	};
	size_t i;

	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (tab[i].n == err) {
			put(tab[i].s);
			return;
		}
	}
	char num[24];

	put("Unknown error ");
	put(utoa((unsigned long)err, 10, num));
}

static inline __attribute__((noreturn)) void exit_now(int code)
{
	for (;;)
		sys1(SYS_exit_group, code);
}

/* One line, "pyoci: " like the runtime's own errors, in one write; then exit
 * NOLIBC_FAIL_STATUS (1 unless the program defines it before including this file). The message
 * is a, b, c (b and c may be NULL), then ": " and the error's text if neg_errno is set. */
static inline __attribute__((noreturn)) void fail3(const char *a, const char *b, const char *c,
					    long neg_errno)
{
	line_len = 0;
	put("pyoci: ");
	put(a);
	if (b)
		put(b);
	if (c)
		put(c);
	if (neg_errno) {
		put(": ");
		put_error(-neg_errno);
	}
	line[line_len++] = '\n';
	sys3(SYS_write, 2, line, line_len);
	exit_now(NOLIBC_FAIL_STATUS);
}

#endif
