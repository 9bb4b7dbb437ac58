"""Fault injection on real mounts (issue 8).

Real file systems fail a backup in ways mocks do not: a share that is
unmounted between operations or in the middle of a backup, a disk that is
full, a share remounted read-only, a network server that stops answering
(sshfs to an sshd of the test's own, frozen with SIGSTOP), Home Assistant
killed while it writes, and many calls at once. Each test proves that
nothing is lost or half-visible and that Home Assistant stays responsive.

The tests need root (mounts, sshd); where mounting is not possible they
skip with the reason, or fail with BACKUP_OFFLOAD_REQUIRE_MOUNTS=1 (CI).
Debian packages: e2fsprogs, sshfs, fuse3, openssh-server, openssh-client.
Only 127.0.0.1 is used; every mount and process is removed, also on failure.
"""
