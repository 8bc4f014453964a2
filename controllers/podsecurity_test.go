package controllers

import (
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// The cache pods and the operator pod pass the API server's PodSecurity
// admission at the "restricted" level.
func TestPodsMeetRestrictedPodSecurity(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	nsObj := get(t, "", ns, &corev1.Namespace{})
	nsObj.Labels = map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}
	if err := k8s.Update(bg, nsObj); err != nil {
		t.Fatal(err)
	}
	// The admission check is live: a plain pod is refused.
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	if err := k8s.Create(bg, plain); err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("a pod without security settings was not refused: %v", err)
	}
	newDiskCache(t, ns, "psa", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.TLS = &cachev1alpha1.TLSSpec{SecretName: "psa-tls"} // every volume kind
	})
	c := waitChildren(t, ns, "psa")
	pod := &corev1.Pod{ObjectMeta: *c.sts.Spec.Template.ObjectMeta.DeepCopy(), Spec: *c.sts.Spec.Template.Spec.DeepCopy()}
	pod.Name, pod.Namespace = "psa-0", ns
	// The StatefulSet controller adds the claim as a volume.
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: DataVolume, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-psa-0"}}})
	if err := k8s.Create(bg, pod); err != nil {
		t.Errorf("cache pod rejected: %v", err)
	}

	// The operator's own Deployment (config/manager/manager.yaml).
	docs := strings.Split(string(readFile(t, filepath.Join("..", "config", "manager", "manager.yaml"))), "\n---\n")
	var dep appsv1.Deployment
	for _, d := range docs {
		if strings.Contains(d, "kind: Deployment") {
			if err := yaml.Unmarshal([]byte(d), &dep); err != nil {
				t.Fatal(err)
			}
		}
	}
	if dep.Name == "" {
		t.Fatal("no Deployment in config/manager/manager.yaml")
	}
	op := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "operator", Namespace: ns}, Spec: dep.Spec.Template.Spec}
	op.Spec.ServiceAccountName = ""
	if err := k8s.Create(bg, op); err != nil {
		t.Errorf("operator pod rejected: %v", err)
	}
}
