package proto

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MaxObjectBytes is the largest object, in protobuf wire bytes (what goes
// into the Raft log), that Validate accepts, and the masters' default limit
// (server.Config.MaxObjectBytes; ValidateWithLimit checks another). etcd's
// default request limit plays this role in Kubernetes.
const MaxObjectBytes = 1 << 20

// TotalAnnotationSizeLimit is the most bytes an object's annotation keys and
// values may hold together, as in Kubernetes.
const TotalAnnotationSizeLimit = 256 << 10

// ErrInvalid is wrapped by every *ValidationError.
var ErrInvalid = errors.New("invalid object")

// FieldError is one problem with one field. Path is Kubernetes-style
// ("spec.template.spec.containers[0].image", map keys in brackets) and empty
// for the object as a whole; Message reads like Kubernetes' own
// (`Invalid value: "Web_1": a lowercase RFC 1123 subdomain must ...`).
type FieldError struct {
	Path    string
	Message string
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Message
	}
	return e.Path + ": " + e.Message
}

// ValidationError lists every problem Validate found in one object.
type ValidationError struct {
	Kind   string
	Name   string
	Errors []FieldError
}

// Error reads like Kubernetes': `Pod "web" is invalid: [a: ..., b: ...]`.
func (e *ValidationError) Error() string {
	what := e.Kind
	if what == "" {
		what = "object"
	}
	if e.Name != "" {
		what += fmt.Sprintf(" %q", e.Name)
	}
	switch len(e.Errors) {
	case 0:
		return what + " is invalid"
	case 1:
		return what + " is invalid: " + e.Errors[0].Error()
	}
	msgs := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		msgs[i] = fe.Error()
	}
	return what + " is invalid: [" + strings.Join(msgs, ", ") + "]"
}

func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Validate checks an object a user wants to store and returns nil or a
// *ValidationError listing every problem with its field path. Fields that
// SetDefaults fills may be left empty. It covers the mistakes users are
// likely to make, not all of Kubernetes' validation.
func Validate(o *Object) error {
	return ValidateWithLimit(o, MaxObjectBytes)
}

// ValidateWithLimit is Validate with maxBytes as the object size limit in
// place of MaxObjectBytes. maxBytes 0 skips the size check, for a client
// that does not know the limit its masters were started with.
func ValidateWithLimit(o *Object, maxBytes int) error {
	r := o.Resource()
	if r == nil {
		return &ValidationError{Errors: []FieldError{{Path: "kind", Message: "Required value: the object holds no kind"}}}
	}
	ki, _ := kindByName(KindOf(r))
	meta := r.GetMetadata()
	var errs field.ErrorList

	rf := r.ProtoReflect()
	fields := rf.Descriptor().Fields()
	if av := rf.Get(fields.ByName("api_version")).String(); av != "" && av != ki.APIVersion {
		errs = append(errs, notSupported(newPath("apiVersion"), av, []string{ki.APIVersion}))
	}
	if k := rf.Get(fields.ByName("kind")).String(); k != "" && k != ki.Kind {
		errs = append(errs, notSupported(newPath("kind"), k, []string{ki.Kind}))
	}
	errs = append(errs, validateObjectMeta(meta, ki, newPath("metadata"))...)

	spec := newPath("spec")
	switch v := r.(type) {
	case *Namespace:
		for i, f := range v.GetSpec().GetFinalizers() {
			errs = append(errs, qualifiedName(spec.Child("finalizers").Index(i), f)...)
		}
	case *Node:
		errs = append(errs, validateNodeSpec(v.GetSpec(), spec)...)
	case *Pod:
		errs = append(errs, validatePodSpec(v.GetSpec(), spec)...)
	case *Service:
		errs = append(errs, validateServiceSpec(v.GetSpec(), spec)...)
	case *Endpoints:
		errs = append(errs, validateEndpoints(v)...)
	case *ConfigMap:
		errs = append(errs, validateConfigMap(v)...)
	case *Secret:
		errs = append(errs, validateSecret(v)...)
	case *Event:
		errs = append(errs, validateEvent(v)...)
	case *ReplicaSet:
		s := v.GetSpec()
		errs = append(errs, nonNegative(spec.Child("replicas"), int64(s.GetReplicas()))...)
		errs = append(errs, nonNegative(spec.Child("minReadySeconds"), int64(s.GetMinReadySeconds()))...)
		errs = append(errs, validateWorkloadTemplate(s.GetSelector(), s.GetTemplate(), spec, alwaysRestart, true)...)
	case *Deployment:
		errs = append(errs, validateDeploymentSpec(v.GetSpec(), spec)...)
	case *DaemonSet:
		errs = append(errs, validateDaemonSetSpec(v.GetSpec(), spec)...)
	case *Job:
		errs = append(errs, validateJobSpec(v.GetSpec(), spec)...)
	case *Lease:
		errs = append(errs, validateLeaseSpec(v.GetSpec(), spec)...)
	}

	out := make([]FieldError, 0, len(errs)+1)
	for _, e := range errs {
		out = append(out, FieldError{Path: e.Field, Message: e.ErrorBody()})
	}
	return validationError(o, ki, out, maxBytes)
}

// ValidateStatusUpdate checks what a status write stores: o is the write's
// object and size the size of the stored object with o's status
// (SizeWithStatus). As Kubernetes checks a status update, the rest of the
// object is not checked again (it was when it was written), and Validate
// has no rules for a status, so only the size limit applies.
func ValidateStatusUpdate(o *Object, size, maxBytes int) error {
	ki, ok := kindByName(KindOf(o.Resource()))
	if !ok {
		return ValidateWithLimit(o, maxBytes)
	}
	return sizedValidationError(o, ki, nil, size, maxBytes)
}

// validationError adds the size limit's error to out, if o is over
// maxBytes, and returns out as o's ValidationError, nil if it is empty.
func validationError(o *Object, ki KindInfo, out []FieldError, maxBytes int) error {
	return sizedValidationError(o, ki, out, o.SizeVT(), maxBytes)
}

// sizedValidationError is validationError for an object of n bytes.
func sizedValidationError(o *Object, ki KindInfo, out []FieldError, n, maxBytes int) error {
	if maxBytes > 0 && n > maxBytes {
		out = append(out, FieldError{Message: fmt.Sprintf(
			"Too long: the object is %d bytes, more than MaxObjectBytes (%d)", n, maxBytes)})
	}
	if len(out) == 0 {
		return nil
	}
	meta := o.Resource().GetMetadata()
	name := meta.GetName()
	if name == "" {
		name = meta.GetGenerateName()
	}
	return &ValidationError{Kind: ki.Kind, Name: name, Errors: out}
}

// ---- metadata ----

func validateObjectMeta(m *ObjectMeta, ki KindInfo, p *fieldPath) field.ErrorList {
	var errs field.ErrorList
	nameFn := isDNS1123Subdomain
	if ki.Kind == "Namespace" || ki.Kind == "Service" {
		nameFn = isDNS1123Label
	}
	switch {
	case m.GetName() != "":
		errs = append(errs, dnsName(p.Child("name"), m.GetName(), nameFn)...)
	case m.GetGenerateName() != "":
		// A prefix: the generated suffix supplies the final alphanumeric.
		prefix := strings.TrimSuffix(m.GetGenerateName(), "-") + "a"
		for _, msg := range nameFn(prefix) {
			errs = append(errs, invalid(p.Child("generateName"), m.GetGenerateName(), msg))
		}
	default:
		errs = append(errs, required(p.Child("name"), "name or generateName is required"))
	}
	if ns := m.GetNamespace(); ns != "" {
		if !ki.Namespaced {
			errs = append(errs, forbidden(p.Child("namespace"), "not allowed on this type"))
		} else {
			errs = append(errs, dnsName(p.Child("namespace"), ns, isDNS1123Label)...)
		}
	}
	errs = append(errs, validateLabels(m.GetLabels(), p.Child("labels"))...)
	errs = append(errs, validateAnnotations(m.GetAnnotations(), p.Child("annotations"))...)
	for i, f := range m.GetFinalizers() {
		errs = append(errs, qualifiedName(p.Child("finalizers").Index(i), f)...)
	}
	controllers := 0
	for i, ref := range m.GetOwnerReferences() {
		rp := p.Child("ownerReferences").Index(i)
		if ref.GetApiVersion() == "" {
			errs = append(errs, invalid(rp.Child("apiVersion"), "", "version must not be empty"))
		}
		if ref.GetKind() == "" {
			errs = append(errs, invalid(rp.Child("kind"), "", "kind must not be empty"))
		}
		if ref.GetName() == "" {
			errs = append(errs, invalid(rp.Child("name"), "", "name must not be empty"))
		}
		if ref.GetUid() == "" {
			errs = append(errs, invalid(rp.Child("uid"), "", "uid must not be empty"))
		}
		if ref.GetController() {
			controllers++
		}
	}
	if controllers > 1 {
		errs = append(errs, invalid(p.Child("ownerReferences"), controllers, "Only one reference can have Controller set to true"))
	}
	if m.GetGeneration() < 0 {
		errs = append(errs, invalid(p.Child("generation"), m.GetGeneration(), "must be greater than or equal to 0"))
	}
	return errs
}

// isDNS1123Subdomain and isDNS1123Label are apimachinery's checks of the
// same names, which run a regexp: names are checked on every write, and
// the regexps were 4 % of the leader's CPU creating pods. A name the
// loops below accept, the regexps and length limits accept too (the
// equivalence is tested); any other goes to apimachinery for its answer
// and messages.
func isDNS1123Subdomain(v string) []string {
	if len(v) <= validation.DNS1123SubdomainMaxLength && dnsLabels(v, true) {
		return nil
	}
	return validation.IsDNS1123Subdomain(v)
}

func isDNS1123Label(v string) []string {
	if len(v) <= validation.DNS1123LabelMaxLength && dnsLabels(v, false) {
		return nil
	}
	return validation.IsDNS1123Label(v)
}

// dnsLabels reports whether v is one RFC 1123 label ([a-z0-9] at both
// ends, [-a-z0-9] between), or with dots several joined by single dots.
func dnsLabels(v string, dots bool) bool {
	start := 0 // of the current label
	for i := 0; i <= len(v); i++ {
		if i < len(v) {
			c := v[i]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
				continue
			case c != '.' || !dots:
				return false
			}
		}
		// v[start:i] is a whole label.
		if i == start || v[start] == '-' || v[i-1] == '-' {
			return false
		}
		start = i + 1
	}
	return true
}

func dnsName(p *fieldPath, v string, fn func(string) []string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range fn(v) {
		errs = append(errs, invalid(p, v, msg))
	}
	return errs
}

func qualifiedName(p *fieldPath, v string) field.ErrorList {
	return dnsName(p, v, isLabelKey)
}

// isLabelKey, isLabelValue and isConfigMapKey are apimachinery's checks,
// which run a regexp, with a loop in front as for DNS names above: every
// write checks its labels (the regexps were 3 % of the leader's CPU under
// write load). What the loops accept, apimachinery accepts too (tested);
// anything else goes to apimachinery for its answer and messages.
func isLabelKey(v string) []string {
	name := v
	if prefix, n, ok := strings.Cut(v, "/"); ok {
		if len(prefix) > validation.DNS1123SubdomainMaxLength || !dnsLabels(prefix, true) {
			return content.IsLabelKey(v)
		}
		name = n
	}
	if name == "" || !labelToken(name) {
		return content.IsLabelKey(v)
	}
	return nil
}

func isLabelValue(v string) []string {
	if v == "" || labelToken(v) {
		return nil
	}
	return content.IsLabelValue(v)
}

// labelToken reports whether v is at most 63 of [-A-Za-z0-9_.], starting
// and ending with [A-Za-z0-9]: a label value that is not empty, or a label
// key's name part.
func labelToken(v string) bool {
	if len(v) == 0 || len(v) > content.LabelValueMaxLength || !alnum(v[0]) || !alnum(v[len(v)-1]) {
		return false
	}
	for i := 1; i < len(v)-1; i++ {
		if c := v[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func isConfigMapKey(v string) []string {
	if v == "" || len(v) > validation.DNS1123SubdomainMaxLength || strings.HasPrefix(v, ".") && (len(v) == 1 || v[1] == '.') {
		return validation.IsConfigMapKey(v)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return validation.IsConfigMapKey(v)
		}
	}
	return nil
}

// isPortName is apimachinery's IsValidPortName, which runs regexps, with a
// loop in front as above: container ports and probes name their ports on
// every pod (the regexps were 8 % of BenchmarkValidatePod). It accepts
// 1-15 of [-a-z0-9] with a letter, no hyphen at either end and no two in a
// row (tested against apimachinery); anything else goes to apimachinery.
func isPortName(v string) []string {
	if len(v) == 0 || len(v) > 15 || v[0] == '-' || v[len(v)-1] == '-' {
		return validation.IsValidPortName(v)
	}
	letter := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9':
		case c == '-' && v[i-1] != '-':
		default:
			return validation.IsValidPortName(v)
		}
	}
	if !letter {
		return validation.IsValidPortName(v)
	}
	return nil
}

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func validateLabels(ls map[string]string, p *fieldPath) field.ErrorList {
	return keyErrors(ls, func(k, v string) field.ErrorList {
		errs := qualifiedName(p, k)
		for _, msg := range isLabelValue(v) {
			errs = append(errs, invalid(p, v, msg))
		}
		return errs
	})
}

func validateAnnotations(as map[string]string, p *fieldPath) field.ErrorList {
	errs := keyErrors(as, func(k, _ string) field.ErrorList { return qualifiedName(p, strings.ToLower(k)) })
	total := 0
	for k, v := range as {
		total += len(k) + len(v)
	}
	if total > TotalAnnotationSizeLimit {
		errs = append(errs, tooLong(p, "", TotalAnnotationSizeLimit))
	}
	return errs
}

// ---- small helpers ----

// keyErrors returns what check finds wrong with the entries of m, in key
// order so that a message lists them the same way every time. The keys are
// sorted only once an entry has an error: a valid object, nearly every
// write, needs no order (sorting was most of validating a pod's labels).
func keyErrors[V any](m map[string]V, check func(k string, v V) field.ErrorList) field.ErrorList {
	for k, v := range m {
		if len(check(k, v)) == 0 {
			continue
		}
		var errs field.ErrorList
		for _, k := range sortedKeys(m) {
			errs = append(errs, check(k, m[k])...)
		}
		return errs
	}
	return nil
}

func nonNegative(p *fieldPath, v int64) field.ErrorList {
	if v < 0 {
		return field.ErrorList{invalid(p, v, "must be greater than or equal to 0")}
	}
	return nil
}

func portNum(p *fieldPath, v int32) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsValidPortNum(int(v)) {
		errs = append(errs, invalid(p, v, msg))
	}
	return errs
}

// oneOf checks an enum field; empty is accepted because SetDefaults fills
// it (or the field is optional).
func oneOf(p *fieldPath, v string, allowed ...string) field.ErrorList {
	if v == "" || slices.Contains(allowed, v) {
		return nil
	}
	return field.ErrorList{notSupported(p, v, allowed)}
}

// intOrStringPort checks a port given by number or by IANA_SVC_NAME.
func intOrStringPort(p *fieldPath, v string) field.ErrorList {
	if isCanonicalInt32(v) {
		return portNum(p, int32(mustAtoi(v)))
	}
	var errs field.ErrorList
	for _, msg := range isPortName(v) {
		errs = append(errs, invalid(p, v, msg))
	}
	return errs
}

func mustAtoi(s string) int64 {
	n, _ := parseInt(s, 64)
	return n
}

var supportedProtocols = []string{"TCP", "UDP"}

// relativePath checks a path that must stay below a directory.
func relativePath(p *fieldPath, v string) field.ErrorList {
	var errs field.ErrorList
	if path.IsAbs(v) {
		errs = append(errs, invalid(p, v, "must be a relative path"))
	}
	if slices.Contains(strings.Split(v, "/"), "..") {
		errs = append(errs, invalid(p, v, "must not contain '..'"))
	}
	return errs
}

// ---- resources ----

var standardContainerResources = []string{"cpu", "memory", "ephemeral-storage"}

func validateResourceList(rl map[string]string, p *fieldPath) (map[string]resource.Quantity, field.ErrorList) {
	qs := make(map[string]resource.Quantity, len(rl))
	errs := keyErrors(rl, func(name, v string) field.ErrorList {
		kp := p.Key(name)
		errs := qualifiedName(kp, name)
		if !strings.Contains(name, "/") && !slices.Contains(standardContainerResources, name) && !strings.HasPrefix(name, "hugepages-") {
			errs = append(errs, invalid(kp, name, "must be a standard resource for containers"))
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return append(errs, invalid(kp, v, err.Error()))
		}
		if q.Sign() < 0 {
			errs = append(errs, invalid(kp, v, "must be greater than or equal to 0"))
		}
		qs[name] = q
		return errs
	})
	return qs, errs
}

func validateResources(r *ResourceRequirements, p *fieldPath) field.ErrorList {
	limits, errs := validateResourceList(r.GetLimits(), p.Child("limits"))
	requests, rerrs := validateResourceList(r.GetRequests(), p.Child("requests"))
	errs = append(errs, rerrs...)
	return append(errs, keyErrors(requests, func(name string, req resource.Quantity) field.ErrorList {
		if lim, ok := limits[name]; ok && req.Cmp(lim) > 0 {
			return field.ErrorList{invalid(p.Child("requests").Key(name), req.String(),
				fmt.Sprintf("must be less than or equal to %s limit of %s", name, lim.String()))}
		}
		return nil
	})...)
}

func validateQuantity(p *fieldPath, v string) field.ErrorList {
	if v == "" {
		return nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return field.ErrorList{invalid(p, v, err.Error())}
	}
	if q.Sign() < 0 {
		return field.ErrorList{invalid(p, v, "must be greater than or equal to 0")}
	}
	return nil
}

// ---- pods ----

func validatePodSpec(s *PodSpec, p *fieldPath) field.ErrorList {
	var errs field.ErrorList
	if s == nil {
		return field.ErrorList{required(p, "")}
	}
	volumes, verrs := validateVolumes(s.GetVolumes(), p.Child("volumes"))
	errs = append(errs, verrs...)

	if len(s.GetContainers()) == 0 {
		errs = append(errs, required(p.Child("containers"), ""))
	}
	names := map[string]bool{}
	for i, c := range s.GetInitContainers() {
		errs = append(errs, validateContainer(c, p.Child("initContainers").Index(i), names, volumes, true)...)
	}
	for i, c := range s.GetContainers() {
		errs = append(errs, validateContainer(c, p.Child("containers").Index(i), names, volumes, false)...)
	}

	errs = append(errs, oneOf(p.Child("restartPolicy"), s.GetRestartPolicy(), "Always", "OnFailure", "Never")...)
	errs = append(errs, oneOf(p.Child("dnsPolicy"), s.GetDnsPolicy(), "ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")...)
	if s.TerminationGracePeriodSeconds != nil {
		errs = append(errs, nonNegative(p.Child("terminationGracePeriodSeconds"), s.GetTerminationGracePeriodSeconds())...)
	}
	if s.ActiveDeadlineSeconds != nil && s.GetActiveDeadlineSeconds() < 1 {
		errs = append(errs, invalid(p.Child("activeDeadlineSeconds"), s.GetActiveDeadlineSeconds(), "must be greater than or equal to 1"))
	}
	errs = append(errs, validateLabels(s.GetNodeSelector(), p.Child("nodeSelector"))...)
	for _, f := range []struct {
		name, value string
		fn          func(string) []string
	}{
		{"nodeName", s.GetNodeName(), isDNS1123Subdomain},
		{"hostname", s.GetHostname(), isDNS1123Label},
		{"subdomain", s.GetSubdomain(), isDNS1123Label},
		{"schedulerName", s.GetSchedulerName(), isDNS1123Subdomain},
		{"serviceAccountName", s.GetServiceAccountName(), isDNS1123Subdomain},
	} {
		if f.value != "" {
			errs = append(errs, dnsName(p.Child(f.name), f.value, f.fn)...)
		}
	}
	for i, t := range s.GetTolerations() {
		errs = append(errs, validateToleration(t, p.Child("tolerations").Index(i))...)
	}
	if na := s.GetAffinity().GetNodeAffinity(); na != nil {
		errs = append(errs, validateNodeAffinity(na, p.Child("affinity").Child("nodeAffinity"))...)
	}
	if sc := s.GetSecurityContext(); sc != nil {
		sp := p.Child("securityContext")
		errs = append(errs, unixID(sp.Child("runAsUser"), sc.RunAsUser)...)
		errs = append(errs, unixID(sp.Child("runAsGroup"), sc.RunAsGroup)...)
		errs = append(errs, unixID(sp.Child("fsGroup"), sc.FsGroup)...)
		for i, g := range sc.GetSupplementalGroups() {
			errs = append(errs, unixID(sp.Child("supplementalGroups").Index(i), &g)...)
		}
		errs = append(errs, validateSeccomp(sc.GetSeccompProfile(), sp.Child("seccompProfile"))...)
	}
	return errs
}

// validateSeccomp checks a seccompProfile, if set.
func validateSeccomp(sp *SeccompProfile, p *fieldPath) field.ErrorList {
	if sp == nil {
		return nil
	}
	errs := oneOf(p.Child("type"), sp.GetType(), "RuntimeDefault", "Unconfined", "Localhost")
	switch {
	case sp.GetType() == "":
		errs = append(errs, required(p.Child("type"), "one of RuntimeDefault, Unconfined, Localhost"))
	case sp.GetType() == "Localhost" && sp.GetLocalhostProfile() == "":
		errs = append(errs, required(p.Child("localhostProfile"), "must be set when seccomp type is Localhost"))
	case sp.GetType() != "Localhost" && sp.GetLocalhostProfile() != "":
		errs = append(errs, invalid(p.Child("localhostProfile"), sp.GetLocalhostProfile(), "can only be set when seccomp type is Localhost"))
	}
	return errs
}

// unixID checks a user or group id, if set.
func unixID(p *fieldPath, v *int64) field.ErrorList {
	if v == nil {
		return nil
	}
	var errs field.ErrorList
	for _, msg := range validation.IsValidUserID(*v) {
		errs = append(errs, invalid(p, *v, msg))
	}
	return errs
}

func validateContainer(c *Container, p *fieldPath, names map[string]bool, volumes map[string]bool, init bool) field.ErrorList {
	var errs field.ErrorList
	switch name := c.GetName(); {
	case name == "":
		errs = append(errs, required(p.Child("name"), ""))
	case names[name]:
		errs = append(errs, duplicate(p.Child("name"), name))
	default:
		names[name] = true
		errs = append(errs, dnsName(p.Child("name"), name, isDNS1123Label)...)
	}
	switch img := c.GetImage(); {
	case img == "":
		errs = append(errs, required(p.Child("image"), ""))
	case strings.TrimSpace(img) != img:
		errs = append(errs, invalid(p.Child("image"), img, "must not have leading or trailing whitespace"))
	}
	errs = append(errs, oneOf(p.Child("imagePullPolicy"), c.GetImagePullPolicy(), "Always", "IfNotPresent", "Never")...)
	if sc := c.GetSecurityContext(); sc != nil {
		sp := p.Child("securityContext")
		errs = append(errs, unixID(sp.Child("runAsUser"), sc.RunAsUser)...)
		errs = append(errs, unixID(sp.Child("runAsGroup"), sc.RunAsGroup)...)
		errs = append(errs, validateSeccomp(sc.GetSeccompProfile(), sp.Child("seccompProfile"))...)
	}

	portNames := map[string]bool{}
	for i, port := range c.GetPorts() {
		pp := p.Child("ports").Index(i)
		if n := port.GetName(); n != "" {
			for _, msg := range isPortName(n) {
				errs = append(errs, invalid(pp.Child("name"), n, msg))
			}
			if portNames[n] {
				errs = append(errs, duplicate(pp.Child("name"), n))
			}
			portNames[n] = true
		}
		errs = append(errs, portNum(pp.Child("containerPort"), port.GetContainerPort())...)
		if port.GetHostPort() != 0 {
			errs = append(errs, portNum(pp.Child("hostPort"), port.GetHostPort())...)
		}
		errs = append(errs, oneOf(pp.Child("protocol"), port.GetProtocol(), supportedProtocols...)...)
		if ip := port.GetHostIp(); ip != "" {
			errs = append(errs, validIP(pp.Child("hostIP"), ip)...)
		}
	}

	for i, ev := range c.GetEnv() {
		errs = append(errs, validateEnvVar(ev, p.Child("env").Index(i))...)
	}
	for i, ef := range c.GetEnvFrom() {
		ep := p.Child("envFrom").Index(i)
		if ef.GetPrefix() != "" {
			for _, msg := range validation.IsRelaxedEnvVarName(ef.GetPrefix()) {
				errs = append(errs, invalid(ep.Child("prefix"), ef.GetPrefix(), msg))
			}
		}
		switch {
		case ef.GetConfigMapRef() != nil && ef.GetSecretRef() != nil:
			errs = append(errs, invalid(ep, "", "may not have more than one field specified at a time"))
		case ef.GetConfigMapRef() != nil:
			errs = append(errs, refName(ep.Child("configMapRef").Child("name"), ef.GetConfigMapRef().GetName())...)
		case ef.GetSecretRef() != nil:
			errs = append(errs, refName(ep.Child("secretRef").Child("name"), ef.GetSecretRef().GetName())...)
		default:
			errs = append(errs, invalid(ep, "", "must specify one of: `configMapRef` or `secretRef`"))
		}
	}

	errs = append(errs, validateResources(c.GetResources(), p.Child("resources"))...)

	mountPaths := map[string]bool{}
	for i, vm := range c.GetVolumeMounts() {
		mp := p.Child("volumeMounts").Index(i)
		switch {
		case vm.GetName() == "":
			errs = append(errs, required(mp.Child("name"), ""))
		case !volumes[vm.GetName()]:
			errs = append(errs, notFound(mp.Child("name"), vm.GetName()))
		}
		switch mpath := vm.GetMountPath(); {
		case mpath == "":
			errs = append(errs, required(mp.Child("mountPath"), ""))
		case mountPaths[mpath]:
			errs = append(errs, invalid(mp.Child("mountPath"), mpath, "must be unique"))
		default:
			mountPaths[mpath] = true
		}
		if vm.GetSubPath() != "" {
			errs = append(errs, relativePath(mp.Child("subPath"), vm.GetSubPath())...)
		}
	}

	probes := []struct {
		name  string
		probe *Probe
	}{{"livenessProbe", c.GetLivenessProbe()}, {"readinessProbe", c.GetReadinessProbe()}, {"startupProbe", c.GetStartupProbe()}}
	for _, pr := range probes {
		if pr.probe == nil {
			continue
		}
		pp := p.Child(pr.name)
		if init {
			errs = append(errs, forbidden(pp, "may not be set for init containers"))
			continue
		}
		errs = append(errs, validateProbe(pr.probe, pp, pr.name)...)
	}
	return errs
}

func refName(p *fieldPath, name string) field.ErrorList {
	if name == "" {
		return field.ErrorList{required(p, "")}
	}
	return dnsName(p, name, isDNS1123Subdomain)
}

func validIP(p *fieldPath, ip string) field.ErrorList {
	if _, err := netip.ParseAddr(ip); err != nil {
		return field.ErrorList{invalid(p, ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")}
	}
	return nil
}

var (
	fieldRefPaths    = []string{"metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs"}
	fieldRefMapPath  = regexp.MustCompile(`^metadata\.(labels|annotations)\['[^']+'\]$`)
	resourceRefNames = []string{"limits.cpu", "limits.memory", "limits.ephemeral-storage", "requests.cpu", "requests.memory", "requests.ephemeral-storage"}
)

func validateEnvVar(ev *EnvVar, p *fieldPath) field.ErrorList {
	var errs field.ErrorList
	if ev.GetName() == "" {
		errs = append(errs, required(p.Child("name"), ""))
	} else {
		for _, msg := range validation.IsRelaxedEnvVarName(ev.GetName()) {
			errs = append(errs, invalid(p.Child("name"), ev.GetName(), msg))
		}
	}
	vf := ev.GetValueFrom()
	if vf == nil {
		return errs
	}
	vp := p.Child("valueFrom")
	if ev.GetValue() != "" {
		errs = append(errs, invalid(vp, "", "may not be specified when `value` is not empty"))
	}
	n := 0
	if r := vf.GetFieldRef(); r != nil {
		n++
		fp := vp.Child("fieldRef").Child("fieldPath")
		switch path := r.GetFieldPath(); {
		case path == "":
			errs = append(errs, required(fp, ""))
		case !slices.Contains(fieldRefPaths, path) && !fieldRefMapPath.MatchString(path):
			errs = append(errs, notSupported(fp, path, fieldRefPaths))
		}
		if av := r.GetApiVersion(); av != "" && av != "v1" {
			errs = append(errs, notSupported(vp.Child("fieldRef").Child("apiVersion"), av, []string{"v1"}))
		}
	}
	if r := vf.GetResourceFieldRef(); r != nil {
		n++
		rp := vp.Child("resourceFieldRef")
		if r.GetResource() == "" {
			errs = append(errs, required(rp.Child("resource"), ""))
		} else if !slices.Contains(resourceRefNames, r.GetResource()) {
			errs = append(errs, notSupported(rp.Child("resource"), r.GetResource(), resourceRefNames))
		}
		errs = append(errs, validateQuantity(rp.Child("divisor"), r.GetDivisor())...)
	}
	if r := vf.GetConfigMapKeyRef(); r != nil {
		n++
		errs = append(errs, keyRef(vp.Child("configMapKeyRef"), r.GetName(), r.GetKey())...)
	}
	if r := vf.GetSecretKeyRef(); r != nil {
		n++
		errs = append(errs, keyRef(vp.Child("secretKeyRef"), r.GetName(), r.GetKey())...)
	}
	switch {
	case n == 0:
		errs = append(errs, invalid(vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"))
	case n > 1:
		errs = append(errs, invalid(vp, "", "may not have more than one field specified at a time"))
	}
	return errs
}

func keyRef(p *fieldPath, name, key string) field.ErrorList {
	errs := refName(p.Child("name"), name)
	if key == "" {
		return append(errs, required(p.Child("key"), ""))
	}
	return append(errs, configKey(p.Child("key"), key)...)
}

func configKey(p *fieldPath, key string) field.ErrorList {
	return dnsName(p, key, isConfigMapKey)
}

func validateProbe(pr *Probe, p *fieldPath, kind string) field.ErrorList {
	var errs field.ErrorList
	handlers := 0
	if e := pr.GetExec(); e != nil {
		handlers++
		if len(e.GetCommand()) == 0 {
			errs = append(errs, required(p.Child("exec").Child("command"), ""))
		}
	}
	if h := pr.GetHttpGet(); h != nil {
		handlers++
		hp := p.Child("httpGet")
		if h.GetPort() == "" {
			errs = append(errs, required(hp.Child("port"), ""))
		} else {
			errs = append(errs, intOrStringPort(hp.Child("port"), h.GetPort())...)
		}
		errs = append(errs, oneOf(hp.Child("scheme"), h.GetScheme(), "HTTP", "HTTPS")...)
		for i, hdr := range h.GetHttpHeaders() {
			for _, msg := range validation.IsHTTPHeaderName(hdr.GetName()) {
				errs = append(errs, invalid(hp.Child("httpHeaders").Index(i).Child("name"), hdr.GetName(), msg))
			}
		}
	}
	if t := pr.GetTcpSocket(); t != nil {
		handlers++
		tp := p.Child("tcpSocket").Child("port")
		if t.GetPort() == "" {
			errs = append(errs, required(tp, ""))
		} else {
			errs = append(errs, intOrStringPort(tp, t.GetPort())...)
		}
	}
	switch {
	case handlers == 0:
		errs = append(errs, required(p, "must specify a handler type"))
	case handlers > 1:
		errs = append(errs, forbidden(p, "may not specify more than 1 handler type"))
	}
	for _, f := range []struct {
		name string
		v    int32
	}{
		{"initialDelaySeconds", pr.GetInitialDelaySeconds()},
		{"timeoutSeconds", pr.GetTimeoutSeconds()},
		{"periodSeconds", pr.GetPeriodSeconds()},
		{"successThreshold", pr.GetSuccessThreshold()},
		{"failureThreshold", pr.GetFailureThreshold()},
	} {
		errs = append(errs, nonNegative(p.Child(f.name), int64(f.v))...)
	}
	if kind != "readinessProbe" && pr.GetSuccessThreshold() > 1 {
		errs = append(errs, invalid(p.Child("successThreshold"), pr.GetSuccessThreshold(), "must be 1"))
	}
	if pr.TerminationGracePeriodSeconds != nil {
		tp := p.Child("terminationGracePeriodSeconds")
		if kind == "readinessProbe" {
			errs = append(errs, invalid(tp, pr.GetTerminationGracePeriodSeconds(), "must not be set for readinessProbes"))
		} else if pr.GetTerminationGracePeriodSeconds() <= 0 {
			errs = append(errs, invalid(tp, pr.GetTerminationGracePeriodSeconds(), "must be greater than 0"))
		}
	}
	return errs
}

var hostPathTypes = []string{"DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"}

// validateVolumes returns the set of valid volume names, for mounts.
func validateVolumes(vols []*Volume, p *fieldPath) (map[string]bool, field.ErrorList) {
	var errs field.ErrorList
	names := map[string]bool{}
	for i, v := range vols {
		vp := p.Index(i)
		switch name := v.GetName(); {
		case name == "":
			errs = append(errs, required(vp.Child("name"), ""))
		case names[name]:
			errs = append(errs, duplicate(vp.Child("name"), name))
		default:
			names[name] = true
			errs = append(errs, dnsName(vp.Child("name"), name, isDNS1123Label)...)
		}
		sources := 0
		if ed := v.GetEmptyDir(); ed != nil {
			sources++
			errs = append(errs, oneOf(vp.Child("emptyDir").Child("medium"), ed.GetMedium(), "Memory")...)
			errs = append(errs, validateQuantity(vp.Child("emptyDir").Child("sizeLimit"), ed.GetSizeLimit())...)
		}
		if hp := v.GetHostPath(); hp != nil {
			sources++
			if hp.GetPath() == "" {
				errs = append(errs, required(vp.Child("hostPath").Child("path"), ""))
			}
			errs = append(errs, oneOf(vp.Child("hostPath").Child("type"), hp.GetType(), hostPathTypes...)...)
		}
		if cm := v.GetConfigMap(); cm != nil {
			sources++
			cp := vp.Child("configMap")
			errs = append(errs, refName(cp.Child("name"), cm.GetName())...)
			errs = append(errs, validateKeyToPaths(cm.GetItems(), cp.Child("items"))...)
			errs = append(errs, fileMode(cp.Child("defaultMode"), cm.DefaultMode)...)
		}
		if s := v.GetSecret(); s != nil {
			sources++
			sp := vp.Child("secret")
			errs = append(errs, refName(sp.Child("secretName"), s.GetSecretName())...)
			errs = append(errs, validateKeyToPaths(s.GetItems(), sp.Child("items"))...)
			errs = append(errs, fileMode(sp.Child("defaultMode"), s.DefaultMode)...)
		}
		switch {
		case sources == 0:
			errs = append(errs, required(vp, "must specify a volume type"))
		case sources > 1:
			errs = append(errs, forbidden(vp, "may not specify more than 1 volume type"))
		}
	}
	return names, errs
}

func validateKeyToPaths(items []*KeyToPath, p *fieldPath) field.ErrorList {
	var errs field.ErrorList
	for i, it := range items {
		ip := p.Index(i)
		if it.GetKey() == "" {
			errs = append(errs, required(ip.Child("key"), ""))
		}
		if it.GetPath() == "" {
			errs = append(errs, required(ip.Child("path"), ""))
		} else {
			errs = append(errs, relativePath(ip.Child("path"), it.GetPath())...)
		}
		if it != nil {
			errs = append(errs, fileMode(ip.Child("mode"), it.Mode)...)
		}
	}
	return errs
}

func fileMode(p *fieldPath, mode *int32) field.ErrorList {
	if mode != nil && (*mode < 0 || *mode > 0o777) {
		return field.ErrorList{invalid(p, *mode, "must be a number between 0 and 0777 (octal), both inclusive")}
	}
	return nil
}

var (
	taintEffects     = []string{"NoSchedule", "PreferNoSchedule", "NoExecute"}
	tolerationOps    = []string{"Equal", "Exists"}
	nodeSelectorOps  = []string{"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"}
	labelSelectorOps = []string{"In", "NotIn", "Exists", "DoesNotExist"}
)

func validateToleration(t *Toleration, p *fieldPath) field.ErrorList {
	var errs field.ErrorList
	if t.GetKey() != "" {
		errs = append(errs, qualifiedName(p.Child("key"), t.GetKey())...)
	} else if t.GetOperator() != "Exists" {
		errs = append(errs, invalid(p.Child("operator"), t.GetOperator(),
			"operator must be Exists when `key` is empty, which means \"match all values and all keys\""))
	}
	if t != nil && t.TolerationSeconds != nil && t.GetEffect() != "NoExecute" {
		errs = append(errs, invalid(p.Child("effect"), t.GetEffect(), "effect must be 'NoExecute' when `tolerationSeconds` is set"))
	}
	switch t.GetOperator() {
	case "", "Equal":
		for _, msg := range isLabelValue(t.GetValue()) {
			errs = append(errs, invalid(p.Child("value"), t.GetValue(), msg))
		}
	case "Exists":
		if t.GetValue() != "" {
			errs = append(errs, invalid(p.Child("operator"), t.GetValue(), "value must be empty when `operator` is 'Exists'"))
		}
	default:
		errs = append(errs, notSupported(p.Child("operator"), t.GetOperator(), tolerationOps))
	}
	errs = append(errs, oneOf(p.Child("effect"), t.GetEffect(), taintEffects...)...)
	return errs
}

func validateNodeAffinity(na *NodeAffinity, p *fieldPath) field.ErrorList {
	var errs field.ErrorList
	if req := na.GetRequiredDuringSchedulingIgnoredDuringExecution(); req != nil {
		rp := p.Child("requiredDuringSchedulingIgnoredDuringExecution").Child("nodeSelectorTerms")
		if len(req.GetNodeSelectorTerms()) == 0 {
			errs = append(errs, required(rp, "must have at least one node selector term"))
		}
		for i, term := range req.GetNodeSelectorTerms() {
			errs = append(errs, validateNodeSelectorTerm(term, rp.Index(i))...)
		}
	}
	for i, pref := range na.GetPreferredDuringSchedulingIgnoredDuringExecution() {
		pp := p.Child("preferredDuringSchedulingIgnoredDuringExecution").Index(i)
		if w := pref.GetWeight(); w < 1 || w > 100 {
			errs = append(errs, invalid(pp.Child("weight"), w, "must be in the range 1-100"))
		}
		if pref.GetPreference() == nil {
			errs = append(errs, required(pp.Child("preference"), ""))
		} else {
			errs = append(errs, validateNodeSelectorTerm(pref.GetPreference(), pp.Child("preference"))...)
		}
	}
	return errs
}

func validateNodeSelectorTerm(t *NodeSelectorTerm, p *fieldPath) field.ErrorList {
	var errs field.ErrorList
	for i, r := range t.GetMatchExpressions() {
		rp := p.Child("matchExpressions").Index(i)
		errs = append(errs, qualifiedName(rp.Child("key"), r.GetKey())...)
		errs = append(errs, selectorRequirement(rp, r.GetOperator(), r.GetValues(), nodeSelectorOps)...)
	}
	for i, r := range t.GetMatchFields() {
		rp := p.Child("matchFields").Index(i)
		if r.GetKey() != "metadata.name" {
			errs = append(errs, notSupported(rp.Child("key"), r.GetKey(), []string{"metadata.name"}))
		}
		switch r.GetOperator() {
		case "In", "NotIn":
			if len(r.GetValues()) != 1 {
				errs = append(errs, required(rp.Child("values"), "must be only one value when `operator` is 'In' or 'NotIn' for node field selector"))
			}
		default:
			errs = append(errs, notSupported(rp.Child("operator"), r.GetOperator(), []string{"In", "NotIn"}))
		}
	}
	return errs
}

// selectorRequirement checks an operator and its values, for label and node
// selectors.
func selectorRequirement(p *fieldPath, op string, values []string, ops []string) field.ErrorList {
	vp := p.Child("values")
	switch op {
	case "In", "NotIn":
		if len(values) == 0 {
			return field.ErrorList{required(vp, "must be specified when `operator` is 'In' or 'NotIn'")}
		}
	case "Exists", "DoesNotExist":
		if len(values) > 0 {
			return field.ErrorList{forbidden(vp, "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")}
		}
	case "Gt", "Lt":
		if !slices.Contains(ops, op) {
			break
		}
		if len(values) != 1 {
			return field.ErrorList{required(vp, "must be specified single value when `operator` is 'Lt' or 'Gt'")}
		}
		if _, err := parseInt(values[0], 64); err != nil {
			return field.ErrorList{invalid(vp.Index(0), values[0], "must be an integer")}
		}
		return nil
	}
	if !slices.Contains(ops, op) {
		return field.ErrorList{notSupported(p.Child("operator"), op, ops)}
	}
	return nil
}

// ---- workloads ----

var (
	alwaysRestart = []string{"Always"}
	jobRestart    = []string{"OnFailure", "Never"}
)

func validateLabelSelector(s *LabelSelector, p *fieldPath) field.ErrorList {
	if s == nil {
		return field.ErrorList{required(p, "")}
	}
	var errs field.ErrorList
	if len(s.GetMatchLabels()) == 0 && len(s.GetMatchExpressions()) == 0 {
		errs = append(errs, invalid(p, s.String(), "empty selector is invalid for this kind"))
	}
	errs = append(errs, validateLabels(s.GetMatchLabels(), p.Child("matchLabels"))...)
	for i, r := range s.GetMatchExpressions() {
		rp := p.Child("matchExpressions").Index(i)
		errs = append(errs, qualifiedName(rp.Child("key"), r.GetKey())...)
		errs = append(errs, selectorRequirement(rp, r.GetOperator(), r.GetValues(), labelSelectorOps)...)
		for j, v := range r.GetValues() {
			for _, msg := range isLabelValue(v) {
				errs = append(errs, invalid(rp.Child("values").Index(j), v, msg))
			}
		}
	}
	return errs
}

// validateWorkloadTemplate checks a controller's selector and pod template
// and that the selector selects the template's pods.
func validateWorkloadTemplate(sel *LabelSelector, t *PodTemplateSpec, p *fieldPath, restart []string, selectorRequired bool) field.ErrorList {
	var errs field.ErrorList
	if sel != nil || selectorRequired {
		errs = validateLabelSelector(sel, p.Child("selector"))
	}
	tp := p.Child("template")
	if t == nil {
		return append(errs, required(tp, ""))
	}
	mp := tp.Child("metadata")
	tl := t.GetMetadata().GetLabels()
	errs = append(errs, validateLabels(tl, mp.Child("labels"))...)
	errs = append(errs, validateAnnotations(t.GetMetadata().GetAnnotations(), mp.Child("annotations"))...)
	if len(errs) == 0 && sel != nil {
		if s, err := sel.AsSelector(); err == nil && !s.Empty() && !s.Matches(labels.Set(tl)) {
			errs = append(errs, invalid(mp.Child("labels"), tl, "`selector` does not match template `labels`"))
		}
	}
	sp := tp.Child("spec")
	errs = append(errs, validatePodSpec(t.GetSpec(), sp)...)
	if t.GetSpec() != nil {
		rp := sp.Child("restartPolicy")
		switch rpv := t.GetSpec().GetRestartPolicy(); {
		case rpv == "" && slices.Equal(restart, jobRestart):
			errs = append(errs, required(rp, `valid values: "OnFailure", "Never"`))
		case rpv != "" && !slices.Contains(restart, rpv):
			errs = append(errs, notSupported(rp, rpv, restart))
		}
		if t.GetSpec().ActiveDeadlineSeconds != nil && !slices.Equal(restart, jobRestart) {
			errs = append(errs, forbidden(sp.Child("activeDeadlineSeconds"), "activeDeadlineSeconds in this kind is not supported"))
		}
	}
	return errs
}

// intOrPercent resolves a maxSurge/maxUnavailable value; zero reports
// whether it is 0 or 0%.
func intOrPercent(p *fieldPath, v string, maxHundred bool) (zero bool, errs field.ErrorList) {
	if v == "" {
		return false, nil
	}
	if isCanonicalInt32(v) {
		n := mustAtoi(v)
		return n == 0, nonNegative(p, n)
	}
	if msgs := validation.IsValidPercent(v); len(msgs) > 0 {
		for _, msg := range msgs {
			errs = append(errs, invalid(p, v, msg))
		}
		return false, errs
	}
	n := mustAtoi(strings.TrimSuffix(v, "%"))
	if maxHundred && n > 100 {
		errs = append(errs, invalid(p, v, "must not be greater than 100%"))
	}
	return n == 0, errs
}

func validateDeploymentSpec(s *DeploymentSpec, p *fieldPath) field.ErrorList {
	if s == nil {
		s = &DeploymentSpec{}
	}
	var errs field.ErrorList
	if s.Replicas != nil {
		errs = append(errs, nonNegative(p.Child("replicas"), int64(s.GetReplicas()))...)
	}
	errs = append(errs, validateWorkloadTemplate(s.GetSelector(), s.GetTemplate(), p, alwaysRestart, true)...)
	sp := p.Child("strategy")
	st := s.GetStrategy()
	errs = append(errs, oneOf(sp.Child("type"), st.GetType(), "RollingUpdate", "Recreate")...)
	if ru := st.GetRollingUpdate(); ru != nil {
		rp := sp.Child("rollingUpdate")
		if st.GetType() == "Recreate" {
			errs = append(errs, forbidden(rp, "may not be specified when strategy `type` is 'Recreate'"))
		}
		unavailZero, e1 := intOrPercent(rp.Child("maxUnavailable"), ru.GetMaxUnavailable(), true)
		surgeZero, e2 := intOrPercent(rp.Child("maxSurge"), ru.GetMaxSurge(), false)
		errs = append(errs, e1...)
		errs = append(errs, e2...)
		if unavailZero && surgeZero {
			errs = append(errs, invalid(rp.Child("maxUnavailable"), ru.GetMaxUnavailable(), "may not be 0 when `maxSurge` is 0"))
		}
	}
	errs = append(errs, nonNegative(p.Child("minReadySeconds"), int64(s.GetMinReadySeconds()))...)
	if s.RevisionHistoryLimit != nil {
		errs = append(errs, nonNegative(p.Child("revisionHistoryLimit"), int64(s.GetRevisionHistoryLimit()))...)
	}
	if s.ProgressDeadlineSeconds != nil {
		pd := p.Child("progressDeadlineSeconds")
		if s.GetProgressDeadlineSeconds() <= 0 {
			errs = append(errs, invalid(pd, s.GetProgressDeadlineSeconds(), "must be greater than 0"))
		} else if s.GetProgressDeadlineSeconds() <= s.GetMinReadySeconds() {
			errs = append(errs, invalid(pd, s.GetProgressDeadlineSeconds(), "must be greater than minReadySeconds"))
		}
	}
	return errs
}

func validateDaemonSetSpec(s *DaemonSetSpec, p *fieldPath) field.ErrorList {
	if s == nil {
		s = &DaemonSetSpec{}
	}
	errs := validateWorkloadTemplate(s.GetSelector(), s.GetTemplate(), p, alwaysRestart, true)
	up := p.Child("updateStrategy")
	us := s.GetUpdateStrategy()
	errs = append(errs, oneOf(up.Child("type"), us.GetType(), "RollingUpdate", "OnDelete")...)
	if ru := us.GetRollingUpdate(); ru != nil {
		rp := up.Child("rollingUpdate")
		if us.GetType() == "OnDelete" {
			errs = append(errs, forbidden(rp, "may not be specified when strategy `type` is 'OnDelete'"))
		}
		unavailZero, e1 := intOrPercent(rp.Child("maxUnavailable"), ru.GetMaxUnavailable(), true)
		surgeZero, e2 := intOrPercent(rp.Child("maxSurge"), ru.GetMaxSurge(), true)
		errs = append(errs, e1...)
		errs = append(errs, e2...)
		hasUnavail := ru.GetMaxUnavailable() != "" && !unavailZero
		hasSurge := ru.GetMaxSurge() != "" && !surgeZero
		switch {
		case hasUnavail && hasSurge:
			errs = append(errs, invalid(rp.Child("maxSurge"), ru.GetMaxSurge(), "may not be set when maxUnavailable is non-zero"))
		case unavailZero && (surgeZero || ru.GetMaxSurge() == ""):
			errs = append(errs, invalid(rp.Child("maxUnavailable"), ru.GetMaxUnavailable(), "may not be 0 when `maxSurge` is 0"))
		}
	}
	errs = append(errs, nonNegative(p.Child("minReadySeconds"), int64(s.GetMinReadySeconds()))...)
	if s.RevisionHistoryLimit != nil {
		errs = append(errs, nonNegative(p.Child("revisionHistoryLimit"), int64(s.GetRevisionHistoryLimit()))...)
	}
	return errs
}

func validateJobSpec(s *JobSpec, p *fieldPath) field.ErrorList {
	if s == nil {
		s = &JobSpec{}
	}
	var errs field.ErrorList
	for _, f := range []struct {
		name string
		v    *int32
	}{
		{"parallelism", s.Parallelism},
		{"completions", s.Completions},
		{"backoffLimit", s.BackoffLimit},
		{"ttlSecondsAfterFinished", s.TtlSecondsAfterFinished},
	} {
		if f.v != nil {
			errs = append(errs, nonNegative(p.Child(f.name), int64(*f.v))...)
		}
	}
	if s.ActiveDeadlineSeconds != nil && s.GetActiveDeadlineSeconds() <= 0 {
		errs = append(errs, invalid(p.Child("activeDeadlineSeconds"), s.GetActiveDeadlineSeconds(), "must be greater than 0"))
	}
	// Without manualSelector the selector is generated from the Job's uid
	// (SetDefaults), so it may be missing here.
	errs = append(errs, validateWorkloadTemplate(s.GetSelector(), s.GetTemplate(), p, jobRestart, s.GetManualSelector())...)
	return errs
}

// ---- services and endpoints ----

func validateServiceSpec(s *ServiceSpec, p *fieldPath) field.ErrorList {
	var errs field.ErrorList
	typ := s.GetType()
	errs = append(errs, oneOf(p.Child("type"), typ, "ClusterIP", "NodePort")...)
	headless := s.GetClusterIp() == "None"
	if ip := s.GetClusterIp(); ip != "" && !headless {
		errs = append(errs, validIP(p.Child("clusterIP"), ip)...)
	}
	if ips := s.GetClusterIps(); len(ips) > 0 && s.GetClusterIp() != "" && ips[0] != s.GetClusterIp() {
		errs = append(errs, invalid(p.Child("clusterIPs").Index(0), ips[0], "must match `clusterIP`"))
	}
	if headless && typ == "NodePort" {
		errs = append(errs, invalid(p.Child("clusterIP"), "None", "may not be set to 'None' for NodePort services"))
	}
	if len(s.GetPorts()) == 0 && !headless {
		errs = append(errs, required(p.Child("ports"), ""))
	}
	names := map[string]bool{}
	nodePorts := map[int32]bool{}
	type portKey struct {
		Port     int32  `json:"port"`
		Protocol string `json:"protocol"`
	}
	seen := map[portKey]bool{}
	for i, sp := range s.GetPorts() {
		pp := p.Child("ports").Index(i)
		switch n := sp.GetName(); {
		case n == "" && len(s.GetPorts()) > 1:
			errs = append(errs, required(pp.Child("name"), ""))
		case n == "":
		case names[n]:
			errs = append(errs, duplicate(pp.Child("name"), n))
		default:
			names[n] = true
			errs = append(errs, dnsName(pp.Child("name"), n, isDNS1123Label)...)
		}
		errs = append(errs, oneOf(pp.Child("protocol"), sp.GetProtocol(), supportedProtocols...)...)
		errs = append(errs, portNum(pp.Child("port"), sp.GetPort())...)
		if tp := sp.GetTargetPort(); tp != "" {
			errs = append(errs, intOrStringPort(pp.Child("targetPort"), tp)...)
		}
		if np := sp.GetNodePort(); np != 0 {
			npp := pp.Child("nodePort")
			switch {
			case typ != "NodePort":
				errs = append(errs, forbidden(npp, fmt.Sprintf("may not be used when `type` is '%s'", cmp(typ, "ClusterIP"))))
			case np < 1 || np > 65535:
				// The masters check the configured --service-node-port-range.
				errs = append(errs, invalid(npp, np, "must be between 1 and 65535, inclusive"))
			case nodePorts[np]:
				errs = append(errs, duplicate(npp, np))
			}
			nodePorts[np] = true
		}
		k := portKey{sp.GetPort(), cmp(sp.GetProtocol(), "TCP")}
		if seen[k] {
			errs = append(errs, duplicate(pp, k))
		}
		seen[k] = true
	}
	errs = append(errs, validateLabels(s.GetSelector(), p.Child("selector"))...)
	errs = append(errs, oneOf(p.Child("sessionAffinity"), s.GetSessionAffinity(), "None", "ClientIP")...)
	if etp := s.GetExternalTrafficPolicy(); etp != "" {
		errs = append(errs, oneOf(p.Child("externalTrafficPolicy"), etp, "Cluster", "Local")...)
		if typ != "NodePort" {
			errs = append(errs, invalid(p.Child("externalTrafficPolicy"), etp, "may only be set for externally-accessible services"))
		}
	}
	return errs
}

// cmp returns v, or def when v is empty.
func cmp(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func validateEndpoints(e *Endpoints) field.ErrorList {
	var errs field.ErrorList
	for i, ss := range e.GetSubsets() {
		sp := newPath("subsets").Index(i)
		for _, list := range []struct {
			name  string
			addrs []*EndpointAddress
		}{{"addresses", ss.GetAddresses()}, {"notReadyAddresses", ss.GetNotReadyAddresses()}} {
			for j, a := range list.addrs {
				errs = append(errs, validIP(sp.Child(list.name).Index(j).Child("ip"), a.GetIp())...)
			}
		}
		for j, port := range ss.GetPorts() {
			pp := sp.Child("ports").Index(j)
			if port.GetName() == "" && len(ss.GetPorts()) > 1 {
				errs = append(errs, required(pp.Child("name"), ""))
			} else if port.GetName() != "" {
				errs = append(errs, dnsName(pp.Child("name"), port.GetName(), isDNS1123Label)...)
			}
			errs = append(errs, portNum(pp.Child("port"), port.GetPort())...)
			errs = append(errs, oneOf(pp.Child("protocol"), port.GetProtocol(), supportedProtocols...)...)
		}
	}
	return errs
}

// ---- nodes ----

func validateNodeSpec(s *NodeSpec, p *fieldPath) field.ErrorList {
	var errs field.ErrorList
	if c := s.GetPodCidr(); c != "" {
		errs = append(errs, validCIDR(p.Child("podCIDR"), c)...)
	}
	for i, c := range s.GetPodCidrs() {
		errs = append(errs, validCIDR(p.Child("podCIDRs").Index(i), c)...)
	}
	if cs := s.GetPodCidrs(); len(cs) > 0 && s.GetPodCidr() != "" && cs[0] != s.GetPodCidr() {
		errs = append(errs, invalid(p.Child("podCIDRs").Index(0), cs[0], "must match `podCIDR`"))
	}
	type taintKey struct{ key, effect string }
	seen := map[taintKey]bool{}
	for i, t := range s.GetTaints() {
		tp := p.Child("taints").Index(i)
		if t.GetKey() == "" {
			errs = append(errs, required(tp.Child("key"), ""))
		} else {
			errs = append(errs, qualifiedName(tp.Child("key"), t.GetKey())...)
		}
		for _, msg := range isLabelValue(t.GetValue()) {
			errs = append(errs, invalid(tp.Child("value"), t.GetValue(), msg))
		}
		if t.GetEffect() == "" {
			errs = append(errs, required(tp.Child("effect"), ""))
		} else {
			errs = append(errs, oneOf(tp.Child("effect"), t.GetEffect(), taintEffects...)...)
		}
		k := taintKey{t.GetKey(), t.GetEffect()}
		if seen[k] {
			errs = append(errs, duplicate(tp, fmt.Sprintf("%s:%s", k.key, k.effect)))
		}
		seen[k] = true
	}
	return errs
}

func validCIDR(p *fieldPath, c string) field.ErrorList {
	if _, err := netip.ParsePrefix(c); err != nil {
		return field.ErrorList{invalid(p, c, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")}
	}
	return nil
}

// ---- config ----

func validateConfigMap(c *ConfigMap) field.ErrorList {
	errs := keyErrors(c.GetData(), func(k, _ string) field.ErrorList { return configKey(newPath("data").Key(k), k) })
	return append(errs, keyErrors(c.GetBinaryData(), func(k string, _ []byte) field.ErrorList {
		kp := newPath("binaryData").Key(k)
		errs := configKey(kp, k)
		if _, dup := c.GetData()[k]; dup {
			errs = append(errs, invalid(kp, k, "duplicate of key present in data"))
		}
		return errs
	})...)
}

// requiredSecretKeys lists, per well-known secret type, the keys it must
// hold (in data or stringData).
var requiredSecretKeys = map[string][]string{
	"kubernetes.io/tls":              {"tls.crt", "tls.key"},
	"kubernetes.io/dockerconfigjson": {".dockerconfigjson"},
	"kubernetes.io/dockercfg":        {".dockercfg"},
	"kubernetes.io/ssh-auth":         {"ssh-privatekey"},
}

func validateSecret(s *Secret) field.ErrorList {
	errs := keyErrors(s.GetData(), func(k string, _ []byte) field.ErrorList { return configKey(newPath("data").Key(k), k) })
	errs = append(errs, keyErrors(s.GetStringData(), func(k, _ string) field.ErrorList {
		return configKey(newPath("stringData").Key(k), k)
	})...)
	for _, k := range requiredSecretKeys[s.GetType()] {
		_, inData := s.GetData()[k]
		_, inString := s.GetStringData()[k]
		if !inData && !inString {
			errs = append(errs, required(newPath("data").Key(k), ""))
		}
	}
	return errs
}

// validateLeaseSpec is Kubernetes' Lease validation: a duration, when set,
// is positive; transitions are never negative.
func validateLeaseSpec(s *LeaseSpec, p *fieldPath) field.ErrorList {
	var errs field.ErrorList
	if s.LeaseDurationSeconds != nil && s.GetLeaseDurationSeconds() <= 0 {
		errs = append(errs, invalid(p.Child("leaseDurationSeconds"), s.GetLeaseDurationSeconds(), "must be greater than 0"))
	}
	if s.LeaseTransitions != nil {
		errs = append(errs, nonNegative(p.Child("leaseTransitions"), int64(s.GetLeaseTransitions()))...)
	}
	return errs
}

func validateEvent(e *Event) field.ErrorList {
	var errs field.ErrorList
	ns := e.GetMetadata().GetNamespace()
	if ions := e.GetInvolvedObject().GetNamespace(); ions != "" && ns != "" && ions != ns {
		errs = append(errs, invalid(newPath("involvedObject").Child("namespace"), ions, "does not match event.namespace"))
	}
	errs = append(errs, oneOf(newPath("type"), e.GetType(), "Normal", "Warning")...)
	return errs
}
