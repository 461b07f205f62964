/* ocicheck: a static in-container probe for pyoci's conformance suite.
 *
 * Prints one JSON object describing the process environment as seen from inside the
 * container (ids, umask, cwd, env, hostname, namespaces, capabilities, rlimits, oom score,
 * personality, mountinfo, cgroups, id maps, io priority...). Extra arguments are probes,
 * each "OP:PATH", reported under "probes" in order:
 *   stat:P    lstat(2) P          read:P    open O_RDONLY and read up to 4 KiB
 *   write:P   open O_WRONLY, write "1"   create:P  open O_CREAT|O_WRONLY, write "x"
 *   mkdir:P   mkdir(2) P          ls:P      list directory entries
 *   readlink:P readlink(2) P
 * Built with `gcc -static` by conformance/run into conformance/build/.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <unistd.h>

extern char **environ;
static int first;

static void jstr(const char *s)
{
	putchar('"');
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\t')
			fputs("\\t", stdout);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void key(const char *k)
{
	if (!first)
		putchar(',');
	first = 0;
	jstr(k);
	putchar(':');
}

static void kstr(const char *k, const char *v) { key(k); jstr(v); }
static void kint(const char *k, long long v) { key(k); printf("%lld", v); }

static char *slurp(const char *path, int *err)
{
	static char buf[1 << 16];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n, tot = 0;
	*err = 0;
	if (fd < 0) {
		*err = errno;
		return NULL;
	}
	while (tot < (ssize_t)sizeof(buf) - 1 && (n = read(fd, buf + tot, sizeof(buf) - 1 - tot)) > 0)
		tot += n;
	if (n < 0 && tot == 0)
		*err = errno;
	close(fd);
	buf[tot] = 0;
	return *err ? NULL : buf;
}

/* Emit a file as an array of its lines (null if unreadable). */
static void klines(const char *k, const char *path)
{
	int err, f = 1;
	char *s = slurp(path, &err), *line, *save = NULL;
	key(k);
	if (!s) {
		fputs("null", stdout);
		return;
	}
	putchar('[');
	for (line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!f)
			putchar(',');
		f = 0;
		jstr(line);
	}
	putchar(']');
}

static void kfile(const char *k, const char *path)
{
	int err;
	char *s = slurp(path, &err);
	key(k);
	if (s)
		jstr(s);
	else
		fputs("null", stdout);
}

static void status_fields(void)
{
	static const char *want[] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
				     "Seccomp", "Umask", "Cpus_allowed_list", "Groups", NULL};
	int err, i;
	char *s = slurp("/proc/self/status", &err), *line, *save = NULL;
	int saved = first;
	key("status");
	putchar('{');
	first = 1;
	for (line = s ? strtok_r(s, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		*colon = 0;
		for (i = 0; want[i]; i++)
			if (!strcmp(want[i], line)) {
				char *v = colon + 1;
				while (*v == ' ' || *v == '\t')
					v++;
				kstr(line, v);
			}
	}
	putchar('}');
	first = saved;
}

static void namespaces(void)
{
	static const char *ns[] = {"cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time",
				   "time_for_children", "user", "uts", NULL};
	char path[64], link[256];
	int i, saved = first;
	key("ns");
	putchar('{');
	first = 1;
	for (i = 0; ns[i]; i++) {
		ssize_t n;
		snprintf(path, sizeof(path), "/proc/self/ns/%s", ns[i]);
		n = readlink(path, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = 0;
		kstr(ns[i], link);
	}
	putchar('}');
	first = saved;
}

static void rlimits(void)
{
	static const struct { const char *n; int r; } rl[] = {
		{"RLIMIT_CPU", RLIMIT_CPU}, {"RLIMIT_FSIZE", RLIMIT_FSIZE}, {"RLIMIT_DATA", RLIMIT_DATA},
		{"RLIMIT_STACK", RLIMIT_STACK}, {"RLIMIT_CORE", RLIMIT_CORE}, {"RLIMIT_RSS", RLIMIT_RSS},
		{"RLIMIT_NPROC", RLIMIT_NPROC}, {"RLIMIT_NOFILE", RLIMIT_NOFILE},
		{"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK}, {"RLIMIT_AS", RLIMIT_AS},
		{"RLIMIT_LOCKS", RLIMIT_LOCKS}, {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
		{"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE},
		{"RLIMIT_RTPRIO", RLIMIT_RTPRIO}, {"RLIMIT_RTTIME", RLIMIT_RTTIME}, {NULL, 0}};
	int i, saved = first;
	key("rlimits");
	putchar('{');
	first = 1;
	for (i = 0; rl[i].n; i++) {
		struct rlimit r;
		if (getrlimit(rl[i].r, &r))
			continue;
		key(rl[i].n);
		printf("[%lld,%lld]", r.rlim_cur == RLIM_INFINITY ? -1LL : (long long)r.rlim_cur,
		       r.rlim_max == RLIM_INFINITY ? -1LL : (long long)r.rlim_max);
	}
	putchar('}');
	first = saved;
}

static void probe(const char *arg)
{
	const char *colon = strchr(arg, ':');
	char op[16] = "", path[4096];
	int saved = first;
	struct stat st;
	size_t n = colon ? (size_t)(colon - arg) : 0;
	if (!colon || n >= sizeof(op))
		return;
	memcpy(op, arg, n);
	snprintf(path, sizeof(path), "%s", colon + 1);
	putchar('{');
	first = 1;
	kstr("op", op);
	kstr("path", path);
	errno = 0;
	if (!strcmp(op, "stat")) {
		if (lstat(path, &st)) {
			kint("errno", errno);
		} else {
			const char *t = S_ISCHR(st.st_mode) ? "c" : S_ISBLK(st.st_mode) ? "b" :
					S_ISDIR(st.st_mode) ? "d" : S_ISLNK(st.st_mode) ? "l" :
					S_ISFIFO(st.st_mode) ? "p" : S_ISSOCK(st.st_mode) ? "s" : "f";
			kint("errno", 0);
			kstr("type", t);
			kint("mode", st.st_mode & 07777);
			kint("uid", st.st_uid);
			kint("gid", st.st_gid);
			kint("major", major(st.st_rdev));
			kint("minor", minor(st.st_rdev));
			kint("size", st.st_size);
		}
	} else if (!strcmp(op, "read")) {
		int err;
		char *s = slurp(path, &err);
		kint("errno", err);
		if (s) {
			if (strlen(s) > 4096)
				s[4096] = 0;
			kstr("data", s);
		}
	} else if (!strcmp(op, "write") || !strcmp(op, "create")) {
		int create = !strcmp(op, "create");
		int fd = open(path, O_WRONLY | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0), 0644);
		int err = 0;
		if (fd < 0)
			err = errno;
		else if (write(fd, create ? "x" : "1", 1) < 0)
			err = errno;
		if (fd >= 0)
			close(fd);
		kint("errno", err);
	} else if (!strcmp(op, "mkdir")) {
		kint("errno", mkdir(path, 0755) ? errno : 0);
	} else if (!strcmp(op, "readlink")) {
		char buf[4096];
		ssize_t k = readlink(path, buf, sizeof(buf) - 1);
		kint("errno", k < 0 ? errno : 0);
		if (k >= 0) {
			buf[k] = 0;
			kstr("target", buf);
		}
	} else if (!strcmp(op, "ls")) {
		DIR *d = opendir(path);
		struct dirent *e;
		int f = 1;
		kint("errno", d ? 0 : errno);
		if (d) {
			key("entries");
			putchar('[');
			while ((e = readdir(d))) {
				if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
					continue;
				if (!f)
					putchar(',');
				f = 0;
				jstr(e->d_name);
			}
			putchar(']');
			closedir(d);
		}
	}
	putchar('}');
	first = saved;
}

int main(int argc, char **argv)
{
	char buf[4096];
	struct utsname u;
	gid_t groups[256];
	int i, ng;

	first = 1;
	putchar('{');
	kint("pid", getpid());
	kint("ppid", getppid());
	kint("uid", getuid());
	kint("euid", geteuid());
	kint("gid", getgid());
	kint("egid", getegid());
	ng = getgroups(256, groups);
	key("groups");
	putchar('[');
	for (i = 0; i < ng; i++)
		printf(i ? ",%u" : "%u", groups[i]);
	putchar(']');
	kstr("cwd", getcwd(buf, sizeof(buf)) ? buf : "");
	if (!uname(&u)) {
		kstr("hostname", u.nodename);
		kstr("domainname", u.domainname);
	}
	key("env");
	putchar('[');
	for (i = 0; environ && environ[i]; i++) {
		if (i)
			putchar(',');
		jstr(environ[i]);
	}
	putchar(']');
	key("args");
	putchar('[');
	for (i = 0; i < argc; i++) {
		if (i)
			putchar(',');
		jstr(argv[i]);
	}
	putchar(']');
	status_fields();
	namespaces();
	rlimits();
	kfile("oom_score_adj", "/proc/self/oom_score_adj");
	kint("personality", personality(0xffffffff));
	kint("ioprio", syscall(SYS_ioprio_get, 1, 0));
	kint("sched_policy", sched_getscheduler(0));
	kint("nice", getpriority(PRIO_PROCESS, 0));
	klines("mountinfo", "/proc/self/mountinfo");
	klines("cgroup", "/proc/self/cgroup");
	klines("uid_map", "/proc/self/uid_map");
	klines("gid_map", "/proc/self/gid_map");
	key("probes");
	putchar('[');
	for (i = 1; i < argc; i++) {
		if (i > 1)
			putchar(',');
		probe(argv[i]);
	}
	putchar(']');
	puts("}");
	fflush(stdout);
	return 0;
}
