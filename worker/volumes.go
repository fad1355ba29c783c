package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"k8s.io/apimachinery/pkg/api/resource"

	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// Pod volumes live under DataDir/pods/<uid>/volumes/<name>:
//
//   - emptyDir: a directory there (a tmpfs for medium Memory, sized by
//     sizeLimit);
//   - configMap and secret: their keys written as files there, once, when
//     the pod starts (later changes to the object are not propagated); a
//     secret's on a tmpfs of its own, as Kubernetes does, so that its
//     keys, encrypted in the masters' log, never reach the node's disk;
//   - hostPath: the host path itself, checked against its type.
//
// Containers get bind mounts of them (configMap and secret read-only).
// Removing a pod unmounts and deletes its directory.

type volume struct {
	path     string
	readOnly bool
}

func (a *Agent) podDir(uid string) string { return filepath.Join(a.cfg.DataDir, "pods", uid) }

// setupVolumes prepares every volume of pod and returns them by name.
func (a *Agent) setupVolumes(ctx context.Context, pod *pb.Pod) (map[string]volume, error) {
	uid := pod.GetMetadata().GetUid()
	base := filepath.Join(a.podDir(uid), "volumes")
	out := map[string]volume{}
	for _, v := range pod.GetSpec().GetVolumes() {
		dir := filepath.Join(base, v.GetName())
		switch {
		case v.GetHostPath() != nil:
			p, err := hostPathVolume(v.GetHostPath())
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.GetName(), err)
			}
			out[v.GetName()] = volume{path: p}
		case v.GetConfigMap() != nil:
			if err := a.writeConfigMapVolume(ctx, pod, v.GetConfigMap(), dir); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.GetName(), err)
			}
			out[v.GetName()] = volume{path: dir, readOnly: true}
		case v.GetSecret() != nil:
			if err := a.writeSecretVolume(ctx, pod, v.GetSecret(), dir); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.GetName(), err)
			}
			out[v.GetName()] = volume{path: dir, readOnly: true}
		default: // emptyDir, and a volume with no source, which Kubernetes treats as one
			if err := emptyDirVolume(v.GetEmptyDir(), dir); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.GetName(), err)
			}
			out[v.GetName()] = volume{path: dir}
		}
	}
	return out, nil
}

func emptyDirVolume(ed *pb.EmptyDirVolumeSource, dir string) error {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	// World-writable like Kubernetes' emptyDir, so non-root containers can
	// use it.
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	if ed.GetMedium() != "Memory" {
		return nil
	}
	if mounted(dir) {
		return nil
	}
	opts := "mode=0777"
	if ed.GetSizeLimit() != "" {
		q, err := resource.ParseQuantity(ed.GetSizeLimit())
		if err != nil {
			return fmt.Errorf("sizeLimit %q: %w", ed.GetSizeLimit(), err)
		}
		opts += fmt.Sprintf(",size=%d", q.Value())
	}
	if err := mountTmpfs(dir, opts); err != nil {
		return fmt.Errorf("mount tmpfs: %w", err)
	}
	return nil
}

func hostPathVolume(hp *pb.HostPathVolumeSource) (string, error) {
	p := filepath.Clean(hp.GetPath())
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("hostPath %q is not absolute", hp.GetPath())
	}
	fi, err := os.Stat(p)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	switch t := hp.GetType(); t {
	case "":
	case "DirectoryOrCreate":
		if !exists {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return "", err
			}
		} else if !fi.IsDir() {
			return "", fmt.Errorf("hostPath %s is not a directory", p)
		}
	case "Directory":
		if !exists || !fi.IsDir() {
			return "", fmt.Errorf("hostPath %s is not a directory", p)
		}
	case "FileOrCreate":
		if !exists {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return "", err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return "", err
			}
			f.Close()
		} else if !fi.Mode().IsRegular() {
			return "", fmt.Errorf("hostPath %s is not a file", p)
		}
	case "File":
		if !exists || !fi.Mode().IsRegular() {
			return "", fmt.Errorf("hostPath %s is not a file", p)
		}
	case "Socket":
		if !exists || fi.Mode()&fs.ModeSocket == 0 {
			return "", fmt.Errorf("hostPath %s is not a socket", p)
		}
	case "CharDevice":
		if !exists || fi.Mode()&fs.ModeCharDevice == 0 {
			return "", fmt.Errorf("hostPath %s is not a character device", p)
		}
	case "BlockDevice":
		if !exists || fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0 {
			return "", fmt.Errorf("hostPath %s is not a block device", p)
		}
	default:
		return "", fmt.Errorf("hostPath type %q is not supported", t)
	}
	return p, nil
}

func (a *Agent) writeConfigMapVolume(ctx context.Context, pod *pb.Pod, src *pb.ConfigMapVolumeSource, dir string) error {
	obj, err := a.getObject(ctx, "ConfigMap", pod.GetMetadata().GetNamespace(), src.GetName())
	var data map[string][]byte
	switch {
	case err == nil:
		data = map[string][]byte{}
		for k, v := range obj.GetConfigMap().GetData() {
			data[k] = []byte(v)
		}
		for k, v := range obj.GetConfigMap().GetBinaryData() {
			data[k] = v
		}
	case isNotFound(err) && src.GetOptional():
	case isNotFound(err):
		return configErr("configmap %q not found", src.GetName())
	default:
		return err
	}
	return writeKeys(dir, data, src.GetItems(), src.GetDefaultMode(), src.DefaultMode != nil, src.GetOptional())
}

func (a *Agent) writeSecretVolume(ctx context.Context, pod *pb.Pod, src *pb.SecretVolumeSource, dir string) error {
	obj, err := a.getObject(ctx, "Secret", pod.GetMetadata().GetNamespace(), src.GetSecretName())
	var data map[string][]byte
	switch {
	case err == nil:
		data = obj.GetSecret().GetData()
	case isNotFound(err) && src.GetOptional():
	case isNotFound(err):
		return configErr("secret %q not found", src.GetSecretName())
	default:
		return err
	}
	files, err := keyFiles(data, src.GetItems(), src.GetDefaultMode(), src.DefaultMode != nil, src.GetOptional())
	if err != nil {
		return err
	}
	return writeKeysInMemory(dir, files)
}

// keyFile is a key of a configMap or secret as a file of its volume.
type keyFile struct {
	rel  string
	body []byte
	mode fs.FileMode
}

// keyFiles lists the files of a configMap or secret volume: every key, or
// only items (key -> relative path) when given.
func keyFiles(data map[string][]byte, items []*pb.KeyToPath, defaultMode int32, hasMode, optional bool) ([]keyFile, error) {
	mode := fs.FileMode(0o644)
	if hasMode {
		mode = fs.FileMode(defaultMode) & fs.ModePerm
	}
	var files []keyFile
	if len(items) == 0 {
		for _, k := range sortedKeys(data) {
			files = append(files, keyFile{k, data[k], mode})
		}
		return files, nil
	}
	for _, it := range items {
		body, ok := data[it.GetKey()]
		if !ok {
			if optional {
				continue
			}
			return nil, configErr("key %q not found", it.GetKey())
		}
		m := mode
		if it.Mode != nil {
			m = fs.FileMode(it.GetMode()) & fs.ModePerm
		}
		files = append(files, keyFile{it.GetPath(), body, m})
	}
	return files, nil
}

// writeKeys writes a configMap's files into dir. It writes into a fresh
// directory and renames it into place, so a container never sees half the
// files.
func writeKeys(dir string, data map[string][]byte, items []*pb.KeyToPath, defaultMode int32, hasMode, optional bool) error {
	if _, err := os.Stat(dir); err == nil {
		return nil // written when the pod first started
	}
	files, err := keyFiles(data, items, defaultMode, hasMode, optional)
	if err != nil {
		return err
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	if err := writeFiles(tmp, files); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// writeKeysInMemory writes a secret's files into a tmpfs mounted at dir.
// The marker dir+".written", on the data disk and empty, tells a complete
// write: a worker that stopped halfway, or a node that rebooted (the tmpfs
// gone), writes them again. Containers start only after their volumes are
// written, so none sees half the files.
func writeKeysInMemory(dir string, files []keyFile) error {
	written := dir + ".written"
	if mounted(dir) {
		if _, err := os.Stat(written); err == nil {
			return nil // written when the pod first started
		}
		if err := unmount(dir); err != nil {
			return fmt.Errorf("unmount a half-written secret volume: %w", err)
		}
	}
	if err := os.Remove(written); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := mountTmpfs(dir, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs: %w", err)
	}
	if err := writeFiles(dir, files); err != nil {
		return err
	}
	return os.WriteFile(written, nil, 0o600)
}

// writeFiles writes files below root, which none of them may escape.
func writeFiles(root string, files []keyFile) error {
	for _, f := range files {
		p, err := securejoin.SecureJoin(root, f.rel)
		if err != nil || !strings.HasPrefix(p, root+string(os.PathSeparator)) {
			return configErr("path %q escapes the volume", f.rel)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.body, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// containerMounts turns c's volumeMounts into the runtime's bind mounts.
func containerMounts(c *pb.Container, vols map[string]volume) ([]wrt.Mount, error) {
	var out []wrt.Mount
	for _, vm := range c.GetVolumeMounts() {
		v, ok := vols[vm.GetName()]
		if !ok {
			return nil, configErr("volumeMount %q: no volume of that name", vm.GetName())
		}
		host := v.path
		if sp := vm.GetSubPath(); sp != "" {
			p, err := securejoin.SecureJoin(v.path, sp)
			if err != nil {
				return nil, configErr("volumeMount %q: subPath %q: %v", vm.GetName(), sp, err)
			}
			if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) && !v.readOnly {
				if err := os.MkdirAll(p, 0o755); err != nil {
					return nil, err
				}
			}
			host = p
		}
		out = append(out, wrt.Mount{HostPath: host, ContainerPath: vm.GetMountPath(), ReadOnly: vm.GetReadOnly() || v.readOnly})
	}
	return out, nil
}

// removePodDir unmounts whatever is mounted below the pod's directory
// (memory-backed emptyDirs) and deletes it. It never deletes through a
// mount.
func (a *Agent) removePodDir(uid string) error {
	if a.cfg.DataDir == "" {
		return nil
	}
	dir := a.podDir(uid)
	for _, m := range mountsBelow(dir) {
		if err := unmount(m); err != nil {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	if left := mountsBelow(dir); len(left) > 0 {
		return fmt.Errorf("still mounted below %s: %v", dir, left)
	}
	return os.RemoveAll(dir)
}

// mountsBelow lists mount points at or below dir, deepest first.
func mountsBelow(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func mounted(dir string) bool {
	for _, m := range mountsBelow(dir) {
		if m == dir {
			return true
		}
	}
	return false
}
