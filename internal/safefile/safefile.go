// Package safefile reads and writes small state files and checks the
// directories that hold them, so that what another user or a stray device
// node put in their place cannot hang, exhaust or impersonate anything.
//
// ReadFile reads only regular files, at most a given size, and never blocks
// opening a FIFO. CheckDir and EnsureDir accept a directory only if this
// user owns it and neither its group nor others can write to it. CheckSocket
// accepts a unix socket only if this user owns it. Errors name the path and
// say how to fix it. WriteFile replaces a file atomically and durably;
// WriteNew creates one only if it does not exist. Everything here is safe
// for concurrent use.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Errors of this package; match them with errors.Is. Errors for a missing
// file also match fs.ErrNotExist.
var (
	// ErrNotRegular means the path is not a regular file (a FIFO, a
	// device, a directory, a socket).
	ErrNotRegular = errors.New("safefile: not a regular file")
	// ErrTooLarge means a file is larger than the limit its reader set.
	ErrTooLarge = errors.New("safefile: file too large")
	// ErrUnsafe means a directory or socket is owned by another user or
	// writable by others.
	ErrUnsafe = errors.New("safefile: not safe to use")
)

// ReadFile returns the content of path if it is a regular file (symbolic
// links are followed) of at most max bytes. It opens with O_NONBLOCK so that
// a FIFO cannot block it, and reads at most max+1 bytes whatever the file
// claims, so /dev/zero or a file growing under it cannot exhaust memory.
func ReadFile(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is a %s", ErrNotRegular, path, kind(fi.Mode()))
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%w: %s is %d bytes, at most %d are read", ErrTooLarge, path, fi.Size(), max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s grew past %d bytes while read", ErrTooLarge, path, max)
	}
	return b, nil
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	}
	return "special file (" + m.Type().String() + ")"
}

// CheckDir returns nil if dir is a directory (symbolic links followed) that
// this user owns and that neither its group nor others can write to. what
// names the directory in the error ("home", "cell socket directory").
func CheckDir(what, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s %s is a %s, not a directory", ErrUnsafe, what, dir, kind(fi.Mode()))
	}
	if uid, ok := owner(fi); ok && uid != os.Getuid() {
		return fmt.Errorf("%w: %s %s is owned by uid %d, not by you (uid %d), so that user controls what is in it; use a directory of your own", ErrUnsafe, what, dir, uid, os.Getuid())
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: %s %s can be written by group or others (mode %v), so another user could replace what is in it; run chmod go-w %s (or chmod 700)", ErrUnsafe, what, dir, perm, dir)
	}
	return nil
}

// EnsureDir creates dir (and its missing parents) with mode 0700 if it does
// not exist, then checks it as CheckDir does.
func EnsureDir(what, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s %s: %w", what, dir, err)
	}
	return CheckDir(what, dir)
}

// CheckSocket returns nil if path is a unix socket (not a symbolic link to
// one) that this user owns, in a directory that passes CheckDir.
func CheckSocket(what, path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%w: %s %s is a %s, not a socket", ErrUnsafe, what, path, kind(fi.Mode()))
	}
	if uid, ok := owner(fi); ok && uid != os.Getuid() {
		return fmt.Errorf("%w: %s %s is owned by uid %d, not by you (uid %d): refusing to talk to it", ErrUnsafe, what, path, uid, os.Getuid())
	}
	return CheckDir("directory of "+what, filepath.Dir(path))
}

// WriteNew creates path holding b with mode perm, only if path does not
// exist: the content goes to a synced temporary file in the same directory
// that is then hard-linked into place, so a reader sees either no file or
// the whole of it, and of several processes creating path at once exactly
// one succeeds. The others get an error matching fs.ErrExist and should
// read what the winner wrote.
func WriteNew(path string, b []byte, perm os.FileMode) error {
	return writeVia(path, b, perm, ".new*", os.Link)
}

// WriteFile replaces path with b, mode perm, atomically: the content goes
// to a synced temporary file in the same directory that is then renamed over
// path, and the directory is synced so that the rename survives a crash. A
// reader sees the old file or the new one whole, never a mix; a failed
// write leaves the old file as it was and no temporary file behind.
func WriteFile(path string, b []byte, perm os.FileMode) error {
	return writeVia(path, b, perm, ".tmp*", os.Rename)
}

// writeVia writes b, mode perm, to a synced temporary file beside path
// (named "."+base+pattern), puts it in place with place (os.Rename or
// os.Link), syncs the directory and removes the temporary name.
func writeVia(path string, b []byte, perm os.FileMode, pattern string, place func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+pattern)
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a rename, a no-op
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := place(tmp, path); err != nil {
		return err
	}
	// Some file systems cannot sync a directory; the file is whole either way.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func owner(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
