package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// applyResult says what apply did.
type applyResult int

const (
	unchanged applyResult = iota
	created
	updated
)

// apply makes the child desired exist with every field it sets, by
// server-side apply with the operator's field manager. existing is the
// object as the cache has it (nil when it does not exist). Nothing is sent
// when existing already holds every field of desired and was last applied
// from the same desired object (the applied-hash annotation), so a steady
// state costs no writes; fields removed from desired are noticed through the
// hash and dropped by the apply.
func (r *DiskCacheReconciler) apply(ctx context.Context, dc *cachev1alpha1.DiskCache, desired, existing client.Object) (applyResult, error) {
	if err := controllerutil.SetControllerReference(dc, desired, r.Scheme); err != nil {
		return unchanged, err
	}
	gvk, err := apiutil.GVKForObject(desired, r.Scheme)
	if err != nil {
		return unchanged, err
	}
	want, err := toApplyMap(desired)
	if err != nil {
		return unchanged, err
	}
	want["apiVersion"], want["kind"] = gvk.GroupVersion().String(), gvk.Kind
	raw, err := json.Marshal(want)
	if err != nil {
		return unchanged, err
	}
	h := hash(string(raw))
	md := want["metadata"].(map[string]any)
	annos, _ := md["annotations"].(map[string]any)
	if annos == nil {
		annos = map[string]any{}
	}
	annos[AppliedHash] = h
	md["annotations"] = annos

	if existing != nil {
		have, err := toMap(existing)
		if err != nil {
			return unchanged, err
		}
		if existing.GetAnnotations()[AppliedHash] == h && subset(want, have) {
			return unchanged, nil
		}
	}
	u := &unstructured.Unstructured{Object: want}
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(ManagerName), client.ForceOwnership); err != nil {
		return unchanged, fmt.Errorf("apply %s %s: %w", gvk.Kind, desired.GetName(), err)
	}
	if existing == nil {
		return created, nil
	}
	return updated, nil
}

// getExisting reads a child from the cache: nil, nil when it does not exist.
func getExisting[T client.Object](ctx context.Context, c client.Reader, dc *cachev1alpha1.DiskCache, name string, obj T) (T, error) {
	var zero T
	if err := c.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return zero, nil
		}
		return zero, err
	}
	return obj, nil
}

// toMap is obj as JSON-decoded maps (numbers as float64).
func toMap(obj any) (map[string]any, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// toApplyMap is a typed desired object as an apply configuration: no status,
// no server-owned metadata, and no null values (typed objects serialise
// unset structs such as creationTimestamp as null).
func toApplyMap(obj client.Object) (map[string]any, error) {
	m, err := toMap(obj)
	if err != nil {
		return nil, err
	}
	delete(m, "status")
	md, _ := m["metadata"].(map[string]any)
	for _, k := range []string{"creationTimestamp", "resourceVersion", "uid", "generation", "managedFields"} {
		delete(md, k)
	}
	if spec, ok := m["spec"].(map[string]any); ok {
		if vcts, ok := spec["volumeClaimTemplates"].([]any); ok {
			for _, v := range vcts {
				if vm, ok := v.(map[string]any); ok {
					delete(vm, "status")
				}
			}
		}
	}
	return pruneNulls(m).(map[string]any), nil
}

func pruneNulls(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if e == nil {
				delete(t, k)
				continue
			}
			t[k] = pruneNulls(e)
		}
	case []any:
		for i, e := range t {
			t[i] = pruneNulls(e)
		}
	}
	return v
}

// subset reports whether every field of want is in have with the same value.
// Lists of objects with distinct "name" fields match by name (have may hold
// more, added by others, e.g. injected sidecars); other lists must match
// element by element.
func subset(want, have any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return false
		}
		for k, wv := range w {
			hv, ok := h[k]
			if !ok {
				if isEmpty(wv) {
					continue
				}
				return false
			}
			if !subset(wv, hv) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok {
			return len(w) == 0 && have == nil
		}
		if names, ok := namedElements(w); ok {
			hn, ok := namedElements(h)
			if !ok {
				return false
			}
			for n, wv := range names {
				hv, ok := hn[n]
				if !ok || !subset(wv, hv) {
					return false
				}
			}
			return true
		}
		if len(w) != len(h) {
			return false
		}
		for i := range w {
			if !subset(w[i], h[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(want, have)
	}
}

// isEmpty is an empty map or list, which the server drops.
func isEmpty(v any) bool {
	switch t := v.(type) {
	case map[string]any:
		return len(t) == 0
	case []any:
		return len(t) == 0
	}
	return false
}

// namedElements indexes a list of objects by their distinct "name" fields.
func namedElements(list []any) (map[string]any, bool) {
	out := make(map[string]any, len(list))
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, false
		}
		n, ok := m["name"].(string)
		if !ok {
			return nil, false
		}
		if _, dup := out[n]; dup {
			return nil, false
		}
		out[n] = m
	}
	return out, true
}
