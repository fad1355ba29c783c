package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

func newPortForwardCommand(o *Options) *cobra.Command {
	var namespace string
	var addresses []string
	cmd := &cobra.Command{
		Use:   "port-forward TYPE/NAME [LOCAL_PORT:]REMOTE_PORT [...[LOCAL_PORT_N:]REMOTE_PORT_N]",
		Short: "Forward one or more local ports to a pod",
		Long: `Port-forward listens on local ports and carries each connection to a port of a pod, through
the masters (one stream per connection), until Ctrl-C, or until the pod is deleted or finishes
("lost connection to pod"; run it again to pick another pod of a deployment or service).

Name a pod (web or pod/web), or a deployment, replicaset or service: one of its running pods is
used. For a service, REMOTE_PORT is a port of the service, forwarded to its targetPort on the pod
(a named targetPort is looked up in the pod's container ports); without LOCAL_PORT the local port
is the service's port. A REMOTE_PORT may be a container port's name. LOCAL_PORT empty (":8080")
picks a free local port.`,
		Example: `  # Listen on ports 5000 and 6000 locally, forwarding to the same ports in the pod
  skiff port-forward pod/web 5000 6000

  # Listen on port 8888 locally, forwarding to 8080 in a pod of deployment web
  skiff port-forward deployment/web 8888:8080

  # Listen on port 8443 locally, forwarding to the targetPort of service web's port "https"
  skiff port-forward service/web 8443:https

  # Listen on a free local port, forwarding to 8080 in the pod
  skiff port-forward pod/web :8080

  # Listen on port 8888 on every address of this machine, forwarding to 8080 in the pod
  skiff port-forward --address 0.0.0.0 pod/web 8888:8080`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return errors.New("TYPE/NAME and list of ports are required for port-forward: skiff port-forward pod/web 8080")
			}
			return runPortForward(o, namespace, addresses, args[0], args[1:])
		},
	}
	f := cmd.Flags()
	f.StringVarP(&namespace, "namespace", "n", "default", "namespace of the pod")
	f.StringSliceVar(&addresses, "address", []string{"127.0.0.1"}, "addresses to listen on (comma separated); localhost means 127.0.0.1 and ::1")
	return cmd
}

// portSpec is one [LOCAL_PORT:]REMOTE_PORT argument as given.
type portSpec struct {
	arg    string
	local  string // "" picks a free port; equal to remote when not given
	remote string // a number or a port name
}

// forwardPort is a resolved port pair: Local 0 picks a free port.
type forwardPort struct {
	Local  int
	Remote int32
}

// portName is a port's name (IANA_SVC_NAME): lower case letters, digits
// and dashes, at least one letter, at most 15 characters.
var portName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$`)

// parsePortSpecs checks kubectl's port syntax: "8080" (the same port on
// both sides), "9000:8080", ":8080" (a free local port).
func parsePortSpecs(args []string) ([]portSpec, error) {
	var out []portSpec
	for _, arg := range args {
		s := portSpec{arg: arg}
		parts := strings.Split(arg, ":")
		switch len(parts) {
		case 1:
			s.local, s.remote = arg, arg
		case 2:
			s.local, s.remote = parts[0], parts[1]
		default:
			return nil, fmt.Errorf("port %q: give [LOCAL_PORT:]REMOTE_PORT, such as 8080, 9000:8080 or :8080", arg)
		}
		if _, err := remotePortNumber(s.remote); err != nil {
			if !portName.MatchString(s.remote) || !strings.ContainsAny(s.remote, "abcdefghijklmnopqrstuvwxyz") {
				return nil, fmt.Errorf("port %q: remote port %q must be a number from 1 to 65535 or a port name", arg, s.remote)
			}
		}
		if s.local != "" && s.local != s.remote {
			if n, err := strconv.Atoi(s.local); err != nil || n < 0 || n > 65535 {
				return nil, fmt.Errorf("port %q: local port %q must be a number from 0 to 65535 (or empty, for a free port)", arg, s.local)
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func remotePortNumber(s string) (int32, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	return int32(n), nil
}

// localPort is s's local port, with named the number its remote port
// resolved to (used when the local port was not given apart).
func (s portSpec) localPort(named int32) int {
	if s.local == "" {
		return 0
	}
	if s.local == s.remote {
		return int(named)
	}
	n, _ := strconv.Atoi(s.local)
	return n
}

// podPorts resolves specs against pod: a remote port name is one of its
// containers' ports.
func podPorts(specs []portSpec, pod *pb.Object) ([]forwardPort, error) {
	var out []forwardPort
	for _, s := range specs {
		remote, err := remotePortNumber(s.remote)
		if err != nil {
			if remote, err = containerPortByName(pod, s.remote); err != nil {
				return nil, err
			}
		}
		out = append(out, forwardPort{Local: s.localPort(remote), Remote: remote})
	}
	return out, nil
}

// servicePorts resolves specs against a service and the pod it picked: the
// remote port is a port of the service (its number or name), forwarded to
// its targetPort on pod, as kubectl does. Without a local port of its own
// a spec listens on the service's port.
func servicePorts(specs []portSpec, svc *pb.Object, pod *pb.Object) ([]forwardPort, error) {
	var out []forwardPort
	name := svc.Meta().GetName()
	for _, s := range specs {
		var sp *pb.ServicePort
		num, err := remotePortNumber(s.remote)
		for _, p := range svc.GetService().GetSpec().GetPorts() {
			if (err == nil && p.GetPort() == num) || (err != nil && p.GetName() == s.remote) {
				sp = p
				break
			}
		}
		if sp == nil {
			if err != nil {
				return nil, fmt.Errorf("service %s does not have a port named %q", name, s.remote)
			}
			return nil, fmt.Errorf("service %s does not have a service port %d", name, num)
		}
		var target int32
		switch tp := sp.GetTargetPort(); {
		case tp == "" || tp == "0":
			target = sp.GetPort()
		default:
			n, err := strconv.Atoi(tp)
			if err == nil {
				target = int32(n)
			} else if target, err = containerPortByName(pod, tp); err != nil {
				return nil, fmt.Errorf("service %s port %d has targetPort %q: %w", name, sp.GetPort(), tp, err)
			}
		}
		out = append(out, forwardPort{Local: s.localPort(sp.GetPort()), Remote: target})
	}
	return out, nil
}

func containerPortByName(pod *pb.Object, name string) (int32, error) {
	for _, c := range pod.GetPod().GetSpec().GetContainers() {
		for _, p := range c.GetPorts() {
			if p.GetName() == name {
				return p.GetContainerPort(), nil
			}
		}
	}
	return 0, fmt.Errorf("pod %s does not have a named port %q", pod.Meta().GetName(), name)
}

// listenAddresses expands --address: localhost is 127.0.0.1 and ::1.
func listenAddresses(addrs []string) ([]string, error) {
	var out []string
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "localhost" {
			out = append(out, "127.0.0.1", "::1")
			continue
		}
		if net.ParseIP(a) == nil {
			return nil, fmt.Errorf("--address %q: give IP addresses or localhost", a)
		}
		out = append(out, a)
	}
	return out, nil
}

func runPortForward(o *Options, namespace string, addresses []string, target string, portArgs []string) error {
	specs, err := parsePortSpecs(portArgs)
	if err != nil {
		return err
	}
	hosts, err := listenAddresses(addresses)
	if err != nil {
		return err
	}
	c, rctx, done, err := o.connect()
	if err != nil {
		return err
	}
	defer done()
	pod, svc, err := forwardTarget(rctx, c, namespace, target)
	if err != nil {
		return err
	}
	var ports []forwardPort
	if svc != nil {
		ports, err = servicePorts(specs, svc, pod)
	} else {
		ports, err = podPorts(specs, pod)
	}
	if err != nil {
		return err
	}

	ctx, cancel := interruptible()
	var mu sync.Mutex // o.Out and o.ErrOut
	printf := func(w io.Writer, format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, format, args...)
	}
	var listeners []net.Listener
	var wg sync.WaitGroup
	defer func() {
		// Stop accepting, end the connections' streams, and wait for both.
		for _, ln := range listeners {
			ln.Close()
		}
		cancel()
		wg.Wait()
	}()
	for _, fp := range ports {
		local, bound := fp.Local, 0
		for _, h := range hosts {
			ln, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(local)))
			if err != nil {
				printf(o.ErrOut, "Unable to listen on port %d: %v\n", local, err)
				continue
			}
			bound++
			listeners = append(listeners, ln)
			local = ln.Addr().(*net.TCPAddr).Port // the port picked, for the other addresses
			printf(o.Out, "Forwarding from %s -> %d\n", net.JoinHostPort(h, strconv.Itoa(local)), fp.Remote)
			wg.Add(1)
			go func(ln net.Listener, local int, remote int32) {
				defer wg.Done()
				for {
					conn, err := ln.Accept()
					if err != nil {
						return // closed
					}
					printf(o.Out, "Handling connection for %d\n", local)
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer conn.Close()
						start := &pb.PortForwardStart{Namespace: namespace, Pod: pod.Meta().GetName(), Port: remote}
						if err := c.PortForward(ctx, start, conn); err != nil && ctx.Err() == nil {
							printf(o.ErrOut, "error: an error occurred forwarding %d -> %d: %s\n", local, remote, errMessage(err))
						}
					}()
				}
			}(ln, local, fp.Remote)
		}
		if bound == 0 {
			return fmt.Errorf("unable to listen on any of the requested addresses (%s) for port %d", strings.Join(hosts, ", "), fp.Local)
		}
	}
	gone := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := waitPodGone(ctx, c, pod); err != nil && ctx.Err() == nil {
			gone <- err
		}
	}()
	select {
	case <-ctx.Done():
		return nil
	case err := <-gone:
		return err
	}
}

// errLostPod is kubectl's message when the pod a port-forward forwards to
// goes away.
var errLostPod = errors.New("lost connection to pod")

// waitPodGone returns errLostPod once pod is deleted, replaced by another
// of its name, or finished (Succeeded or Failed): nothing listens on its
// ports any more, and kubectl ends its port-forward then too. It returns
// ctx's error when ctx ends, or the API's when it cannot watch.
func waitPodGone(ctx context.Context, c *client.Client, pod *pb.Object) error {
	m := pod.Meta()
	ns, name, uid := m.GetNamespace(), m.GetName(), m.GetUid()
	over := func(o *pb.Object) bool {
		phase := o.GetPod().GetStatus().GetPhase()
		return o.Meta().GetUid() != uid || phase == "Succeeded" || phase == "Failed"
	}
	err := followObject(ctx, c, "Pod", ns, name, m.GetResourceVersion(), func(o *pb.Object) (bool, error) {
		if o == nil || over(o) {
			return true, errLostPod
		}
		return false, nil
	})
	switch {
	case errors.Is(err, errLostPod):
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return apiError(err)
}

// forwardTarget resolves TYPE/NAME to a running pod, and the service when
// it names one (whose ports the command's are).
func forwardTarget(ctx context.Context, c *client.Client, namespace, arg string) (pod, svc *pb.Object, err error) {
	kind, name, ok := strings.Cut(arg, "/")
	if !ok {
		kind, name = "pod", arg
	}
	info, err := lookupKind(kind)
	if err != nil {
		return nil, nil, err
	}
	if name == "" {
		return nil, nil, fmt.Errorf("%q: give TYPE/NAME, such as pod/web", arg)
	}
	obj, err := c.Get(ctx, info.Kind, namespace, name, client.ReadOptions{})
	if err != nil {
		return nil, nil, apiError(err)
	}
	var matches func(labels map[string]string) bool
	switch {
	case obj.GetPod() != nil:
		if phase := obj.GetPod().GetStatus().GetPhase(); phase != "Running" {
			return nil, nil, fmt.Errorf("unable to forward port because pod %s is not running. Current status=%s", name, phase)
		}
		return obj, nil, nil
	case obj.GetDeployment() != nil:
		matches = obj.GetDeployment().GetSpec().GetSelector().Matches
	case obj.GetReplicaSet() != nil:
		matches = obj.GetReplicaSet().GetSpec().GetSelector().Matches
	case obj.GetDaemonSet() != nil:
		matches = obj.GetDaemonSet().GetSpec().GetSelector().Matches
	case obj.GetJob() != nil:
		matches = obj.GetJob().GetSpec().GetSelector().Matches
	case obj.GetService() != nil:
		sel := obj.GetService().GetSpec().GetSelector()
		if len(sel) == 0 {
			return nil, nil, fmt.Errorf("service %s has no selector: it names no pods to forward to", name)
		}
		svc = obj
		matches = func(labels map[string]string) bool {
			for k, v := range sel {
				if l, ok := labels[k]; !ok || l != v {
					return false
				}
			}
			return true
		}
	default:
		return nil, nil, fmt.Errorf("cannot port-forward to %s: name a pod, deployment, replicaset, daemonset, job or service", info.Plural)
	}
	all, _, err := c.List(ctx, "Pod", client.ListOptions{Namespace: namespace})
	if err != nil {
		return nil, nil, apiError(err)
	}
	var running []*pb.Object
	others := 0
	for _, p := range all {
		if !matches(p.Meta().GetLabels()) || p.Meta().GetDeletionTimestamp() != nil {
			continue
		}
		if p.GetPod().GetStatus().GetPhase() == "Running" {
			running = append(running, p)
		} else {
			others++
		}
	}
	if len(running) == 0 {
		return nil, nil, fmt.Errorf("%s has no running pods to forward to (%d not running)", objectRef(obj), others)
	}
	return pickPod(running), svc, nil
}
