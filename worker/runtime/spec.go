package runtime

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/capability"
	"k8s.io/apimachinery/pkg/api/resource"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/image"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// This file turns a pod's container spec and its image config into the
// container's process and limits. It does no I/O; the shim resolves user
// names against the container's /etc/passwd later.

// shim.Process is a container's first process.

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// resolveProcess applies Kubernetes' rules: command replaces the image's
// Entrypoint and drops its Cmd; args alone replace Cmd; $(VAR) references
// in env values, command and args expand from the container's env.
func resolveProcess(c *pb.Container, img image.ImageConfig, podSC *pb.PodSecurityContext, hostname string) (shim.Process, error) {
	var p shim.Process

	// Env: HOSTNAME, then the image's, then the container's (by name,
	// later wins, order kept).
	env := []string{"HOSTNAME=" + hostname}
	env = mergeEnv(env, img.Env)
	defined := map[string]string{}
	var containerEnv []string
	for _, e := range c.GetEnv() {
		if e.GetName() == "" || strings.Contains(e.GetName(), "=") {
			return p, fmt.Errorf("%w: env name %q", ErrInvalidSpec, e.GetName())
		}
		v := expand(e.GetValue(), defined)
		defined[e.GetName()] = v
		containerEnv = append(containerEnv, e.GetName()+"="+v)
	}
	env = mergeEnv(env, containerEnv)
	if !slices.ContainsFunc(env, func(s string) bool { return strings.HasPrefix(s, "PATH=") }) {
		env = append(env, defaultPath)
	}
	p.Env = env

	expandAll := func(in []string) []string {
		out := make([]string, len(in))
		for i, a := range in {
			out[i] = expand(a, defined)
		}
		return out
	}
	var args []string
	switch {
	case len(c.GetCommand()) > 0:
		args = append(expandAll(c.GetCommand()), expandAll(c.GetArgs())...)
	case len(c.GetArgs()) > 0:
		args = append(slices.Clone(img.Entrypoint), expandAll(c.GetArgs())...)
	default:
		args = append(slices.Clone(img.Entrypoint), img.Cmd...)
	}
	if len(args) == 0 || args[0] == "" {
		return p, fmt.Errorf("%w: no command: neither the container nor its image sets one", ErrInvalidSpec)
	}
	p.Args = args

	p.Cwd = "/"
	if img.WorkingDir != "" {
		p.Cwd = img.WorkingDir
	}
	if c.GetWorkingDir() != "" {
		p.Cwd = c.GetWorkingDir()
	}
	if !path.IsAbs(p.Cwd) {
		return p, fmt.Errorf("%w: workingDir %q is not absolute", ErrInvalidSpec, p.Cwd)
	}

	sc := c.GetSecurityContext()
	p.User = userSpec(img.User, sc, podSC)
	if sc != nil && sc.RunAsNonRoot != nil {
		p.RunAsNonRoot = sc.GetRunAsNonRoot()
	} else {
		p.RunAsNonRoot = podSC.GetRunAsNonRoot()
	}
	for _, g := range podSC.GetSupplementalGroups() {
		p.AdditionalGids = append(p.AdditionalGids, int(g))
	}
	// fsGroup owns the pod's volumes; every container is in it.
	if podSC != nil && podSC.FsGroup != nil && !slices.Contains(p.AdditionalGids, int(podSC.GetFsGroup())) {
		p.AdditionalGids = append(p.AdditionalGids, int(podSC.GetFsGroup()))
	}
	p.Terminal = c.GetTty()
	if err := checkNonRoot(p); err != nil {
		return p, err
	}
	return p, nil
}

// userSpec combines the image's USER with runAsUser/runAsGroup (container
// level over pod level). runAsUser replaces the whole image user, group
// included, as in CRI runtimes.
func userSpec(imageUser string, sc *pb.SecurityContext, podSC *pb.PodSecurityContext) string {
	var uid, gid *int64
	if podSC != nil {
		uid, gid = podSC.RunAsUser, podSC.RunAsGroup
	}
	if sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	user, group, _ := strings.Cut(imageUser, ":")
	if uid != nil {
		user, group = strconv.FormatInt(*uid, 10), ""
	}
	if gid != nil {
		group = strconv.FormatInt(*gid, 10)
		if user == "" {
			user = "0"
		}
	}
	if group == "" {
		return user
	}
	return user + ":" + group
}

// mergeEnv overrides or appends each KEY=VALUE of add in base.
func mergeEnv(base, add []string) []string {
	out := slices.Clone(base)
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		if i := slices.IndexFunc(out, func(s string) bool { ek, _, _ := strings.Cut(s, "="); return ek == k }); i >= 0 {
			out[i] = kv
		} else {
			out = append(out, kv)
		}
	}
	return out
}

// expand replaces $(VAR) with vars[VAR]: see Expand.
func expand(in string, vars map[string]string) string {
	return Expand(in, func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	})
}

// Expand replaces $(VAR) in s the way Kubernetes does: "$$" is a literal
// "$", references lookup does not know and an unterminated "$(" stay as
// written. The worker uses it for env values, the runtime for command and
// args.
func Expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; next {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
			b.WriteByte(next)
			i++
		}
	}
	return b.String()
}

// resources are a container's cgroup limits.
type resources struct {
	CPUShares uint64
	CPUQuota  int64 // microseconds per CPUPeriod; 0 = no limit
	CPUPeriod uint64
	Memory    int64 // bytes; 0 = no limit
}

const (
	minShares   = 2
	maxShares   = 262144
	quotaPeriod = 100000
	minQuota    = 1000
)

// resolveResources converts requests and limits the way the kubelet does:
// CPU shares from the request (the limit when only it is set; 2 for none),
// a CFS quota from the CPU limit, and the memory limit.
func resolveResources(r *pb.ResourceRequirements) (resources, error) {
	var out resources
	qty := func(m map[string]string, k string) (*resource.Quantity, error) {
		s, ok := m[k]
		if !ok || s == "" {
			return nil, nil
		}
		q, err := resource.ParseQuantity(s)
		if err != nil {
			return nil, fmt.Errorf("%w: resources %s %q: %v", ErrInvalidSpec, k, s, err)
		}
		return &q, nil
	}
	cpuReq, err := qty(r.GetRequests(), "cpu")
	if err != nil {
		return out, err
	}
	cpuLim, err := qty(r.GetLimits(), "cpu")
	if err != nil {
		return out, err
	}
	memLim, err := qty(r.GetLimits(), "memory")
	if err != nil {
		return out, err
	}
	if cpuReq == nil {
		cpuReq = cpuLim
	}
	out.CPUShares = minShares
	if cpuReq != nil {
		out.CPUShares = uint64(min(max(cpuReq.MilliValue()*1024/1000, minShares), maxShares))
	}
	if cpuLim != nil {
		out.CPUPeriod = quotaPeriod
		out.CPUQuota = max(cpuLim.MilliValue()*quotaPeriod/1000, minQuota)
	}
	if memLim != nil {
		out.Memory = memLim.Value()
		if out.Memory <= 0 {
			return out, fmt.Errorf("%w: memory limit %s must be positive", ErrInvalidSpec, memLim)
		}
	}
	return out, nil
}

// defaultCapabilities is Docker's (and containerd's CRI) default set.
var defaultCapabilities = []string{
	"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
	"CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
}

// DefaultCapabilities is the capability set of a container whose
// securityContext does not change it.
func DefaultCapabilities() []string { return slices.Clone(defaultCapabilities) }

// resolveCapabilities applies securityContext.capabilities to the default
// set as containerd's CRI plugin does: add ALL starts from every
// capability, drop ALL from none; then adds are added and drops removed.
// privileged gets every capability. all lists every capability the
// worker can give (those in its own bounding set).
func resolveCapabilities(sc *pb.SecurityContext, all []string) ([]string, error) {
	if err := validateSecurityContext(sc); err != nil {
		return nil, err
	}
	if sc.GetPrivileged() {
		return slices.Clone(all), nil
	}
	norm := func(in []string, valid func(string) bool) ([]string, bool, error) {
		var out []string
		hasAll := false
		for _, c := range in {
			n := strings.ToUpper(c)
			if n == "ALL" {
				hasAll = true
				continue
			}
			if !strings.HasPrefix(n, "CAP_") {
				n = "CAP_" + n
			}
			if !valid(n) {
				return nil, false, fmt.Errorf("%w: capability %q is unknown or not in the worker's own bounding set", ErrInvalidSpec, c)
			}
			out = append(out, n)
		}
		return out, hasAll, nil
	}
	available := func(n string) bool { return slices.Contains(all, n) }
	add, addAll, err := norm(sc.GetCapabilities().GetAdd(), available)
	if err != nil {
		return nil, err
	}
	// Dropping a capability the worker cannot give anyway is fine; a
	// misspelt one is not.
	drop, dropAll, err := norm(sc.GetCapabilities().GetDrop(), func(n string) bool { return available(n) || knownCapability(n) })
	if err != nil {
		return nil, err
	}
	// The defaults the worker itself lacks (a worker in a restricted
	// container) are left out rather than failing every start.
	caps := slices.DeleteFunc(slices.Clone(defaultCapabilities), func(c string) bool { return !available(c) })
	if addAll {
		caps = slices.Clone(all)
	}
	if dropAll {
		caps = nil
	}
	for _, c := range add {
		if !slices.Contains(caps, c) {
			caps = append(caps, c)
		}
	}
	caps = slices.DeleteFunc(caps, func(c string) bool { return slices.Contains(drop, c) })
	slices.Sort(caps)
	return caps, nil
}

// knownCapability reports whether n ("CAP_X") names a capability some
// kernel has.
func knownCapability(n string) bool {
	for _, c := range capability.ListKnown() {
		if "CAP_"+strings.ToUpper(c.String()) == n {
			return true
		}
	}
	return false
}
