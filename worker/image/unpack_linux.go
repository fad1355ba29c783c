package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"

	overlayOpaqueXattr = "trusted.overlay.opaque"
)

// unpack extracts the layer tar r into the empty directory dst, in the form
// overlayfs expects of a lowerdir: an OCI whiteout ".wh.NAME" becomes a 0/0
// character device NAME, and an opaque marker ".wh..wh..opq" becomes the
// trusted.overlay.opaque=y xattr on its directory.
//
// Every path is resolved through an os.Root on dst, so nothing is written
// outside dst: names with ".." are rejected, and so is traversal of absolute
// or escaping symlinks (symlinks themselves may point anywhere; they are
// only followed inside the container). Device nodes are skipped: a container
// gets its devices from the runtime, never from an image.
func unpack(ctx context.Context, dst string, r io.Reader) error {
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()

	type dirMeta struct {
		name  string
		atime time.Time
		mtime time.Time
	}
	var dirs []dirMeta
	buf := make([]byte, 128<<10)
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		if n%64 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "" {
			// The layer root itself: its attributes do not matter, the
			// merged root takes them from the container's upper dir.
			continue
		}
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}

		if strings.HasPrefix(base, whiteoutPrefix) {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return unsafe(name, err)
			}
			switch {
			case base == whiteoutOpaque:
				if err := setOpaque(root, dir); err != nil {
					return fmt.Errorf("opaque %s: %w", dir, err)
				}
			case strings.HasPrefix(base, whiteoutMeta):
				// Other aufs metadata (.wh..wh.plnk, ...): not content.
			default:
				target := path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))
				if err := root.RemoveAll(target); err != nil {
					return unsafe(name, err)
				}
				if err := mknodAt(root, target, unix.S_IFCHR, 0); err != nil {
					return fmt.Errorf("whiteout %s: %w", target, err)
				}
			}
			continue
		}

		if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
			continue
		}
		if dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return unsafe(name, err)
			}
		}
		// A later entry replaces an earlier one, except that a directory
		// entry over an existing directory only updates its attributes.
		if fi, err := root.Lstat(name); err == nil {
			if !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
				if err := root.RemoveAll(name); err != nil {
					return unsafe(name, err)
				}
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return unsafe(name, err)
		}

		mode := os.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return unsafe(name, err)
			}
			if err := applyMeta(root, name, hdr); err != nil {
				return err
			}
			dirs = append(dirs, dirMeta{name: name, atime: atimeOf(hdr), mtime: hdr.ModTime})
		case tar.TypeReg:
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return unsafe(name, err)
			}
			_, err = io.CopyBuffer(f, tr, buf)
			if err == nil {
				err = fileMeta(f, hdr)
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
			if err := root.Chtimes(name, atimeOf(hdr), hdr.ModTime); err != nil {
				return fmt.Errorf("chtimes %s: %w", name, err)
			}
		case tar.TypeSymlink:
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return unsafe(name, err)
			}
			if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return fmt.Errorf("lchown %s: %w", name, err)
			}
		case tar.TypeLink:
			target, err := cleanName(hdr.Linkname)
			if err != nil {
				return err
			}
			if target == "" {
				return fmt.Errorf("%w: hardlink %s to the layer root", ErrUnsafeLayer, name)
			}
			if err := root.Link(target, name); err != nil {
				return unsafe(name, err)
			}
		case tar.TypeFifo:
			if err := mknodAt(root, name, unix.S_IFIFO|uint32(mode), 0); err != nil {
				return fmt.Errorf("mkfifo %s: %w", name, err)
			}
			if err := applyMeta(root, name, hdr); err != nil {
				return err
			}
		default:
			// Global PAX headers, GNU sparse metadata and unknown types
			// carry no file of their own.
		}
	}
	// Directory times last, since creating entries inside changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := root.Chtimes(d.name, d.atime, d.mtime); err != nil {
			return fmt.Errorf("chtimes %s: %w", d.name, err)
		}
	}
	return nil
}

// cleanName turns a tar entry name into a path relative to the layer root
// ("" for the root itself), rejecting any ".." component outright: no
// legitimate layer needs one, and lexically folding it away would hide an
// attack.
func cleanName(n string) (string, error) {
	for part := range strings.SplitSeq(n, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q", ErrUnsafeLayer, n)
		}
	}
	return strings.TrimPrefix(path.Clean("/"+n), "/"), nil
}

func unsafe(name string, err error) error {
	if errors.Is(err, ErrUnsafeLayer) {
		return err
	}
	// os.Root reports escapes (through absolute or escaping symlinks) as
	// plain errors; any failure to resolve within the root is treated as
	// an unsafe layer.
	return fmt.Errorf("%w: %s: %v", ErrUnsafeLayer, name, err)
}

func atimeOf(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

// applyMeta sets owner, mode and xattrs on a directory or fifo through a
// descriptor opened inside the root.
func applyMeta(root *os.Root, name string, hdr *tar.Header) error {
	f, err := root.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return unsafe(name, err)
	}
	defer f.Close()
	if err := fileMeta(f, hdr); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// fileMeta sets owner, then mode (chown clears setuid bits), then xattrs.
func fileMeta(f *os.File, hdr *tar.Header) error {
	if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	mode := os.FileMode(hdr.Mode).Perm()
	if hdr.Mode&04000 != 0 {
		mode |= os.ModeSetuid
	}
	if hdr.Mode&02000 != 0 {
		mode |= os.ModeSetgid
	}
	if hdr.Mode&01000 != 0 {
		mode |= os.ModeSticky
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		// overlayfs' own xattrs would let a layer forge whiteouts,
		// redirects or metacopy in other layers' namespaces.
		if strings.HasPrefix(attr, "trusted.overlay.") {
			continue
		}
		if err := unix.Fsetxattr(int(f.Fd()), attr, []byte(v), 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
				continue
			}
			return fmt.Errorf("setxattr %s: %w", attr, err)
		}
	}
	return nil
}

func setOpaque(root *os.Root, dir string) error {
	f, err := root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return unsafe(dir, err)
	}
	defer f.Close()
	return unix.Fsetxattr(int(f.Fd()), overlayOpaqueXattr, []byte("y"), 0)
}

// mknodAt creates a node in the root-resolved parent directory of name;
// mknodat never follows the final component.
func mknodAt(root *os.Root, name string, mode uint32, dev int) error {
	dir, base := path.Split(name)
	if dir == "" {
		dir = "."
	}
	d, err := root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return unsafe(name, err)
	}
	defer d.Close()
	return unix.Mknodat(int(d.Fd()), base, mode, dev)
}
