/*
 * pyoci-waiter: what the container's init becomes while the container is "created".
 *
 * The Python init does everything up to exec.fifo (rootfs, identity, capabilities, rlimits,
 * NNP; without NNP it loads the seccomp filter, which needs CAP_SYS_ADMIN then, as its last
 * act), then executes this program from a sealed memfd (pyoci/linux/waiter.py). execve gives the process a new, tiny
 * address space, so the waiting init's peak RSS is this program's, not an interpreter's.
 * PID, start time, namespaces, cgroup, credentials, capabilities (the execve transformation
 * is idempotent for them: see waiter.py), rlimits, NNP, umask, cwd and the inherited fds
 * survive the execve.
 *
 *   pyoci-waiter FIFO_FD CPUS BPF_FD FLAGS PATH ARG0 [ARG...]     (envp: the program's)
 *
 * FIFO_FD  O_PATH fd of exec.fifo: opened for writing through /proc/self/fd (blocks until
 *          `pyoci start` opens it for reading), then "0" is written.
 * CPUS     process.execCPUAffinity.final (a CPU list, validated by pyoci), or "-".
 * BPF_FD   fd of a file holding the seccomp program (struct sock_filter[]), or "-": read and
 *          closed at once, so that only FIFO_FD stays open while waiting; loaded with
 *          seccomp(2) and FLAGS right before the final execve (the process has NNP then).
 * PATH     the resolved program, executed with ARG0... and this process's environment.
 *
 * No libc: raw system calls (x86_64, aarch64: nolibc.h), static, no dynamic loader, nothing mapped but
 * this file, a stack and the vDSO. Every failure is one line on stderr and exit status 1.
 */

#include "nolibc.h"

#define O_WRONLY 01
#define EINTR 4
#define EACCES 13
#define PR_SET_DUMPABLE 4
#define PR_SET_NAME 15
#define SIG_UNBLOCK 1
#define SA_RESTART 0x10000000UL
#define SA_RESTORER 0x04000000UL
#define SECCOMP_SET_MODE_FILTER 1
#define BPF_MAXINSNS 4096
#define MAX_CPU 65536		/* pyoci.linux.process.MAX_CPU */

struct ksigaction {		/* the kernel's struct sigaction (x86_64 and arm64 alike) */
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	unsigned long mask;
};

struct sock_fprog {
	unsigned short len;
	void *filter;
};

/* As the Python init's _die_on_termination_signals: as PID 1 of its namespace with default
 * handlers the kernel would drop them, and `kill ID TERM` of a created container must end it. */
static const int term_signals[] = {1, 2, 3, 15, 10, 12, 14};	/* HUP INT QUIT TERM USR1 USR2 ALRM */
#define N_TERM_SIGNALS (sizeof(term_signals) / sizeof(term_signals[0]))

static unsigned char bpf[BPF_MAXINSNS * 8 + 1];
static unsigned long cpumask[MAX_CPU / 64 + 1];
static __attribute__((noreturn)) void fail(const char *what, long neg_errno)
{
	fail3(what, NULL, NULL, neg_errno);
}

static int streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static long parse_uint(const char *s, const char *what)
{
	unsigned long v = 0;

	if (!*s)
		fail(what, 0);
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > 0xffffffffUL)
			fail(what, 0);
		v = v * 10 + (unsigned long)(*s - '0');
	}
	if (v > 0x7fffffffUL)
		fail(what, 0);
	return (long)v;
}

/* "0-1,3" (already validated by pyoci.linux.process.parse_cpu_list) into cpumask; returns
 * the size in bytes for sched_setaffinity, as Python's CPU_ALLOC_SIZE(highest + 1). */
static size_t parse_cpus(const char *s)
{
	unsigned long top = 0, lo, hi;
	int any = 0;

	while (*s) {
		while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\v' || *s == '\f')
			s++;
		if (*s == ',') {
			s++;
			continue;
		}
		if (!*s)
			break;
		if (*s < '0' || *s > '9')
			fail("process.execCPUAffinity.final: invalid CPU list", 0);
		for (lo = 0; *s >= '0' && *s <= '9' && lo <= MAX_CPU; s++)
			lo = lo * 10 + (unsigned long)(*s - '0');
		hi = lo;
		if (*s == '-') {
			s++;
			if (*s < '0' || *s > '9')
				fail("process.execCPUAffinity.final: invalid CPU list", 0);
			for (hi = 0; *s >= '0' && *s <= '9' && hi <= MAX_CPU; s++)
				hi = hi * 10 + (unsigned long)(*s - '0');
		}
		while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\v' || *s == '\f')
			s++;
		if (lo > hi || hi > MAX_CPU || (*s && *s != ','))
			fail("process.execCPUAffinity.final: invalid CPU list", 0);
		for (; lo <= hi; lo++)
			cpumask[lo / 64] |= 1UL << (lo % 64);
		if (hi > top)
			top = hi;
		any = 1;
	}
	if (!any)
		fail("process.execCPUAffinity.final: invalid CPU list", 0);
	return (top / 64 + 1) * sizeof(unsigned long);
}

static void on_signal(int signo)
{
	exit_now(128 + signo);
}

static void set_handlers(void (*handler)(int))
{
	struct ksigaction sa;
	size_t i;

	sa.handler = handler;
	sa.flags = SA_RESTORER | SA_RESTART;
	sa.restorer = nolibc_restorer;
	sa.mask = 0;
	for (i = 0; i < N_TERM_SIGNALS; i++)
		sa.mask |= 1UL << (term_signals[i] - 1);
	for (i = 0; i < N_TERM_SIGNALS; i++)
		sys4(SYS_rt_sigaction, term_signals[i], &sa, NULL, sizeof(sa.mask));
}

__attribute__((noreturn, used)) void nolibc_main(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	const char *cpus, *path, *digits;
	char fifo_path[32], num[24];
	unsigned long flags, block = 0;
	size_t cpus_len = 0, n = 0;
	long fifo, bpf_fd = -1, fd, r;
	size_t i;

	/* First of all: nothing in the container may ptrace this process or open its memory
	 * (execve made it dumpable again unless its file was unreadable to it). */
	sys2(SYS_prctl, PR_SET_DUMPABLE, 0);
	sys2(SYS_prctl, PR_SET_NAME, "pyoci-waiter");
	if (argc < 7)
		fail("pyoci-waiter: usage: FIFO_FD CPUS BPF_FD FLAGS PATH ARG0 [ARG...]", 0);
	fifo = parse_uint(argv[1], "pyoci-waiter: bad FIFO_FD");
	cpus = argv[2];
	if (!streq(argv[3], "-"))
		bpf_fd = parse_uint(argv[3], "pyoci-waiter: bad BPF_FD");
	flags = (unsigned long)parse_uint(argv[4], "pyoci-waiter: bad FLAGS");
	path = argv[5];

	/* The Python init blocked these signals before its execve so that none is lost in
	 * between (a pending signal survives execve): handlers first, then unblock. */
	set_handlers(on_signal);
	for (i = 0; i < N_TERM_SIGNALS; i++)
		block |= 1UL << (term_signals[i] - 1);
	sys4(SYS_rt_sigprocmask, SIG_UNBLOCK, &block, NULL, sizeof(block));

	if (bpf_fd >= 0) {
		while (n < sizeof(bpf)) {
			r = sys3(SYS_read, bpf_fd, bpf + n, sizeof(bpf) - n);
			if (r == -EINTR)
				continue;
			if (r < 0)
				fail("linux.seccomp: reading the BPF program", r);
			if (r == 0)
				break;
			n += (size_t)r;
		}
		sys1(SYS_close, bpf_fd);
		if (n == 0 || n % 8 || n / 8 > BPF_MAXINSNS)
			fail3("linux.seccomp: invalid BPF program of ", utoa(n, 10, num), " bytes", 0);
	}
	if (!streq(cpus, "-"))
		cpus_len = parse_cpus(cpus);

	/* Block until `pyoci start` opens the fifo for reading (re-open the O_PATH fd through
	 * /proc: the fifo's host path is not reachable from inside the rootfs). */
	digits = utoa((unsigned long)fifo, 10, num);
	memcpy(fifo_path, "/proc/self/fd/", 14);
	memcpy(fifo_path + 14, digits, (size_t)(num + 24 - digits));	/* with its NUL */
	do
		fd = sys4(SYS_openat, AT_FDCWD, fifo_path, O_WRONLY | O_CLOEXEC, 0);
	while (fd == -EINTR);
	if (fd < 0)
		fail(fifo_path, fd);
	set_handlers((void (*)(int))0);	/* SIG_DFL: started, the program decides */
	sys1(SYS_close, fifo);
	do
		r = sys3(SYS_write, fd, "0", 1);	/* `start` succeeds */
	while (r == -EINTR);
	if (r < 0)
		fail("exec.fifo", r);
	sys1(SYS_close, fd);

	if (cpus_len) {
		r = sys3(SYS_sched_setaffinity, 0, cpus_len, cpumask);
		if (r < 0)
			fail3("process.execCPUAffinity.final: sched_setaffinity \"", cpus, "\"", r);
	}
	if (bpf_fd >= 0) {	/* as close to the execve as possible */
		struct sock_fprog prog = {(unsigned short)(n / 8), bpf};

		r = sys3(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
		if (r == -EACCES)
			fail("linux.seccomp: loading the filter needs no_new_privs or CAP_SYS_ADMIN", 0);
		if (r < 0)
			fail3("linux.seccomp: seccomp(SECCOMP_SET_MODE_FILTER, 0x", utoa(flags, 16, num),
			      ")", r);
	}
	r = sys3(SYS_execve, path, argv + 6, envp);
	fail(path, r);
}
