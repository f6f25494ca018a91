package delaynet

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// netnsDir is where ip netns keeps its namespaces.
const netnsDir = "/run/netns"

// ip runs the ip command and returns its stderr in the error.
func ip(args ...string) error {
	cmd := exec.Command("ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// inNS runs f on a fresh OS thread that has entered the named network
// namespace. The thread is never handed back to the Go scheduler: it stays
// locked and exits with the goroutine, so no other goroutine runs in the
// namespace by accident.
func inNS(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread dies with this goroutine
		fd, err := unix.Open(filepath.Join(netnsDir, name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", name, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// writeSysctl writes a value under /proc/sys in the calling thread's
// network namespace.
func writeSysctl(key, value string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0); err != nil {
		return fmt.Errorf("sysctl %s: %w", key, err)
	}
	return nil
}

// ethtool's legacy set commands for one offload each (linux/ethtool.h).
const (
	ethtoolSTXCSUM = 0x17
	ethtoolSSG     = 0x19
	ethtoolSTSO    = 0x1f
	ethtoolSGSO    = 0x24
	ethtoolSGRO    = 0x2c
)

// ifreqData is struct ifreq with its union holding a pointer.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

type ethtoolValue struct {
	cmd, data uint32
}

// offloadsOff turns off checksum offload, scatter-gather, TSO, GSO and GRO
// on the named interface of the calling thread's namespace, so that every
// frame an AF_PACKET socket reads is at most the MTU and carries its real
// checksums. It does what `ethtool -K dev tx off sg off tso off gso off
// gro off` does, without needing ethtool.
func offloadsOff(dev string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("offloads %s: %w", dev, err)
	}
	defer unix.Close(fd)
	for _, cmd := range []uint32{ethtoolSGRO, ethtoolSGSO, ethtoolSTSO, ethtoolSSG, ethtoolSTXCSUM} {
		v := &ethtoolValue{cmd: cmd}
		var ifr ifreqData
		copy(ifr.name[:len(ifr.name)-1], dev)
		ifr.data = unsafe.Pointer(v)
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
			return fmt.Errorf("offloads %s: ethtool command %#x: %w", dev, cmd, e)
		}
		runtime.KeepAlive(v)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPort opens a non-blocking AF_PACKET socket that reads every frame
// arriving on dev (not those sent out of it) in the calling thread's
// namespace, and writes frames out of it, with the kernel's receive
// timestamp on each frame.
func openPort(dev string) (int, error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return -1, fmt.Errorf("port %s: %w", dev, err)
	}
	// Protocol 0 until bound, so that no frame of another interface slips in.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("port %s: AF_PACKET socket: %w", dev, err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("port %s: %s: %w", dev, what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	for _, opt := range []int{unix.SO_RCVBUFFORCE, unix.SO_SNDBUFFORCE} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 4<<20); err != nil {
			return fail("buffer size", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("SO_TIMESTAMPNS", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	return fd, nil
}

// deleteNS deletes a namespace; one already gone is not an error.
func deleteNS(name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return ip("netns", "delete", name)
}

// Cleanup deletes the namespaces that a process no longer running left
// behind (their names begin with NamePrefix and that process's PID), after
// killing by PID whatever still runs inside them. Namespaces of running
// processes, this one included, are left alone.
func Cleanup(log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delaynet: cleanup: %w", err)
	}
	var errs []error
	for _, e := range entries {
		pid, ok := ownerPID(e.Name())
		if !ok || alive(pid) {
			continue
		}
		for _, p := range nsPIDs(e.Name()) {
			if err := syscall.Kill(p, syscall.SIGKILL); err == nil {
				log.Info("killed a process left in a stale namespace", "ns", e.Name(), "pid", p)
			}
		}
		if err := deleteNS(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("deleted a stale namespace", "ns", e.Name())
	}
	return errors.Join(errs...)
}

// ownerPID parses the PID out of a name NamePrefix<pid>x<seq>-...
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, NamePrefix)
	if !ok {
		return 0, false
	}
	num, tail, ok := strings.Cut(rest, "x")
	if !ok || !strings.Contains(tail, "-") {
		return 0, false
	}
	pid, err := strconv.Atoi(num)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// nsPIDs lists the processes running in a named namespace (ip netns pids).
func nsPIDs(name string) []int {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil && p > 0 && p != os.Getpid() {
			pids = append(pids, p)
		}
	}
	return pids
}
