package runtime

import (
	"fmt"
	"strconv"
	"strings"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// This file holds the platform-independent half of container hardening:
// which protections a container gets from its securityContext. The
// libcontainer side is in container_linux.go and security_linux.go.
//
// Secure by default, as Docker and containerd are: Docker's capability set,
// no_new_privs, masked and read-only kernel paths, a read-only /sys and the
// default seccomp profile. securityContext loosens it (privileged,
// capabilities.add, allowPrivilegeEscalation: true) or tightens it
// (capabilities.drop, runAsUser, runAsNonRoot, readOnlyRootFilesystem).
//
// Seccomp filters are applied by libcontainer's init inside this binary,
// which can do so only when built with cgo, libseccomp's headers (Debian:
// libseccomp-dev) and the "seccomp" build tag (`go build -tags seccomp`).
// A binary built otherwise runs containers without a filter and says so in
// its log (SeccompUnavailableMessage); SeccompAvailable tells which it is.
// The profile itself is Docker's default (github.com/moby/profiles/seccomp),
// widened for the capabilities the container holds, as Docker does.

// SeccompProfile is a container's seccomp profile, named as Kubernetes'
// securityContext.seccompProfile.type names them.
type SeccompProfile string

const (
	// SeccompRuntimeDefault is Docker's default profile: an allowlist of
	// the system calls ordinary programs need, widened for the
	// capabilities the container holds (mount with CAP_SYS_ADMIN, ...).
	// Applied only where the binary is built with libseccomp; see
	// SeccompAvailable.
	SeccompRuntimeDefault SeccompProfile = "RuntimeDefault"
	// SeccompUnconfined applies no seccomp filter.
	SeccompUnconfined SeccompProfile = "Unconfined"
)

// SeccompUnavailableMessage is what the runtime logs (once per process)
// when a container should get the default profile but the binary cannot
// apply seccomp filters (SeccompAvailable is false).
const SeccompUnavailableMessage = "seccomp: unavailable (built without libseccomp)"

// seccompProfile returns the profile a container runs with: none for a
// privileged one (as Docker does), RuntimeDefault unless sec asks for
// Unconfined. Unknown values get the default, the safe side.
func seccompProfile(sc *pb.SecurityContext, sec *Security) SeccompProfile {
	if sc.GetPrivileged() {
		return SeccompUnconfined
	}
	if sec != nil && sec.Seccomp == SeccompUnconfined {
		return SeccompUnconfined
	}
	return SeccompRuntimeDefault
}

// noNewPrivileges reports whether the container's processes run with
// no_new_privs, so setuid binaries and file capabilities cannot raise their
// privileges. It is on unless allowPrivilegeEscalation is explicitly true
// or the container is privileged. (Kubernetes' default is off; skiff's is
// the secure one.)
func noNewPrivileges(sc *pb.SecurityContext) bool {
	if sc.GetPrivileged() {
		return false
	}
	return sc == nil || sc.AllowPrivilegeEscalation == nil || !sc.GetAllowPrivilegeEscalation()
}

// validateSecurityContext rejects the combinations Kubernetes' API
// validation rejects, which cannot be honoured.
func validateSecurityContext(sc *pb.SecurityContext) error {
	if sc == nil || sc.AllowPrivilegeEscalation == nil || sc.GetAllowPrivilegeEscalation() {
		return nil
	}
	if sc.GetPrivileged() {
		return fmt.Errorf("%w: securityContext: cannot set allowPrivilegeEscalation to false and privileged to true", ErrInvalidSpec)
	}
	for _, c := range sc.GetCapabilities().GetAdd() {
		if n := strings.ToUpper(c); n == "SYS_ADMIN" || n == "CAP_SYS_ADMIN" {
			return fmt.Errorf("%w: securityContext: cannot set allowPrivilegeEscalation to false and capabilities.add %s", ErrInvalidSpec, c)
		}
	}
	return nil
}

// checkNonRoot refuses a process that would run as root when runAsNonRoot
// is set and its user is numeric (or the image default, root). A user
// given by name is checked by the shim once it is resolved against the
// image's /etc/passwd.
func checkNonRoot(p shim.Process) error {
	if !p.RunAsNonRoot {
		return nil
	}
	u, _, _ := strings.Cut(p.User, ":")
	if u == "" {
		return fmt.Errorf("%w: the image sets no USER; set securityContext.runAsUser to a non-zero uid", ErrRunAsNonRoot)
	}
	if uid, err := strconv.ParseInt(u, 10, 64); err == nil && uid == 0 {
		return fmt.Errorf("%w: its user is uid 0; set securityContext.runAsUser to a non-zero uid", ErrRunAsNonRoot)
	}
	return nil
}
