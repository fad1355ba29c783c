package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Annotations of the mirror controller.
const (
	// MirrorTo on a ConfigMap lists the namespaces to copy it into
	// ("team-a,team-b").
	MirrorTo = "mirror.example.skiff.sh/to"
	// MirrorOf on a copy names its source ("namespace/name").
	MirrorOf = "mirror.example.skiff.sh/of"
)

// indexMirrorOf maps a source key to its copies.
const indexMirrorOf = "mirror-of"

// MirrorName is the controller's name.
const MirrorName = "configmap-mirror"

// MirrorRegistration returns the mirror controller's Registration.
func MirrorRegistration() controllers.Registration {
	return controllers.Registration{Name: MirrorName, New: func(env controllers.Env) (controllers.Controller, error) {
		return NewMirror(env).Loop, nil
	}}
}

// Mirror keeps copies of annotated ConfigMaps in the namespaces they name:
// it creates missing copies, brings changed ones back in line, and deletes
// copies the source no longer asks for (or all of them when the source
// goes). Its queue holds source keys.
type Mirror struct {
	*controllers.Loop
	env        controllers.Env
	configMaps *controllers.Informer
	namespaces *controllers.Informer
}

// NewMirror builds the controller over env's informers.
func NewMirror(env controllers.Env) *Mirror {
	m := &Mirror{env: env, configMaps: env.Informers.For("ConfigMap"), namespaces: env.Informers.For("Namespace")}
	m.configMaps.AddIndexer(indexMirrorOf, func(o *pb.Object) []string {
		if src := o.Meta().GetAnnotations()[MirrorOf]; src != "" {
			return []string{src}
		}
		return nil
	})
	m.Loop = controllers.NewLoop(env, m, controllers.LoopOptions{WaitFor: []*controllers.Informer{m.configMaps, m.namespaces}})
	// A source changed, or a copy did (someone edited or deleted it).
	m.configMaps.AddHandler(controllers.EnqueueKeys(m.Queue(), func(o *pb.Object) []string {
		a := o.Meta().GetAnnotations()
		switch {
		case a[MirrorOf] != "":
			return []string{a[MirrorOf]}
		case a[MirrorTo] != "":
			return []string{controllers.KeyOf(o)}
		}
		return nil
	}))
	// A namespace that appears may be one a source is waiting for.
	m.namespaces.AddHandler(controllers.HandlerFuncs{AddFunc: func(*pb.Object) {
		for _, o := range m.configMaps.List() {
			if o.Meta().GetAnnotations()[MirrorTo] != "" {
				m.Queue().Add(controllers.KeyOf(o))
			}
		}
	}})
	return m
}

// targets are the namespaces a source asks for, that exist and accept new
// objects, without its own.
func (m *Mirror) targets(src *pb.Object) []string {
	var out []string
	for _, ns := range strings.Split(src.Meta().GetAnnotations()[MirrorTo], ",") {
		ns = strings.TrimSpace(ns)
		if ns == "" || ns == src.Meta().GetNamespace() || slices.Contains(out, ns) {
			continue
		}
		if o, ok := m.namespaces.Get(ns); ok && o.Meta().GetDeletionTimestamp() == nil {
			out = append(out, ns)
		}
	}
	return out
}

// Reconcile implements controllers.Reconciler for a source key.
func (m *Mirror) Reconcile(ctx context.Context, key string) (controllers.Result, error) {
	src, ok := m.configMaps.Get(key)
	var want []string
	if ok && src.Meta().GetDeletionTimestamp() == nil {
		want = m.targets(src)
	}
	var errs []error
	for _, ns := range want {
		errs = append(errs, m.syncCopy(ctx, src, ns))
	}
	// Copies nobody asks for any more.
	for _, cp := range m.configMaps.ByIndex(indexMirrorOf, key) {
		if slices.Contains(want, cp.Meta().GetNamespace()) {
			continue
		}
		cm := cp.Meta()
		err := m.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: "ConfigMap", Namespace: cm.GetNamespace(), Name: cm.GetName(), Uid: cm.GetUid()})
		if err != nil && !controllers.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete copy %s: %w", cm.Key(), err))
		}
	}
	return controllers.Result{}, errors.Join(errs...)
}

func (m *Mirror) syncCopy(ctx context.Context, src *pb.Object, ns string) error {
	s := src.GetConfigMap()
	key := controllers.KeyOf(src)
	cur, ok := m.configMaps.Get(controllers.Key(ns, s.GetMetadata().GetName()))
	if !ok {
		cp := &pb.ConfigMap{
			Metadata: &pb.ObjectMeta{Name: s.GetMetadata().GetName(), Namespace: ns, Annotations: map[string]string{MirrorOf: key}},
			Data:     maps.Clone(s.GetData()), BinaryData: maps.Clone(s.GetBinaryData()),
		}
		_, err := m.env.Cluster.Create(ctx, pb.Wrap(cp))
		if err != nil && !controllers.IsAlreadyExists(err) {
			return fmt.Errorf("create copy in %s: %w", ns, err)
		}
		if err == nil {
			m.env.Recorder.Eventf(src, controllers.EventTypeNormal, "Mirrored", "Copied to namespace %s", ns)
		}
		return nil
	}
	if cur.Meta().GetAnnotations()[MirrorOf] != key {
		m.env.Recorder.Eventf(src, controllers.EventTypeWarning, "MirrorConflict", "ConfigMap %s exists and is not a copy of this one: left alone", controllers.KeyOf(cur))
		return nil
	}
	c := cur.GetConfigMap()
	if maps.Equal(c.GetData(), s.GetData()) && maps.EqualFunc(c.GetBinaryData(), s.GetBinaryData(), func(a, b []byte) bool { return string(a) == string(b) }) {
		return nil
	}
	next := cur.Clone()
	next.GetConfigMap().Data = maps.Clone(s.GetData())
	next.GetConfigMap().BinaryData = maps.Clone(s.GetBinaryData())
	if _, err := m.env.Cluster.Update(ctx, next); err != nil && !controllers.IsNotFound(err) {
		return fmt.Errorf("update copy %s: %w", controllers.KeyOf(cur), err)
	}
	return nil
}

var _ controllers.Reconciler = (*Mirror)(nil)
