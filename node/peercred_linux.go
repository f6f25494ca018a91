package node

import (
	"errors"
	"net"
	"syscall"
)

// peerCred returns the credentials of the process at the other end of a
// unix socket (SO_PEERCRED: as they were when it connected).
func peerCred(c net.Conn) cred {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return cred{err: errors.New("not a unix socket")}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return cred{err: err}
	}
	var uc2 *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		uc2, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return cred{err: err}
	}
	if serr != nil {
		return cred{err: serr}
	}
	return cred{uid: uc2.Uid, gid: uc2.Gid, pid: uc2.Pid, ok: true}
}
