package controllers

import (
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

func objectMeta(dc *cachev1alpha1.DiskCache, name, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: dc.Namespace, Labels: labels(dc, component)}
}

// buildConfigMap is <name>-config with cacheserver.conf.
func buildConfigMap(dc *cachev1alpha1.DiskCache) *corev1.ConfigMap {
	conf, _ := serverConfig(dc)
	return &corev1.ConfigMap{
		ObjectMeta: objectMeta(dc, configMapName(dc), ComponentConfig),
		Data:       map[string]string{ConfigKey: conf},
	}
}

// buildTokenSecret is the generated <name>-token Secret with a fresh
// 32-byte random token. It is created once and never updated.
func buildTokenSecret(dc *cachev1alpha1.DiskCache) (*corev1.Secret, error) {
	return buildSecretWithToken(dc, generatedSecretName(dc), ComponentAuth)
}

// buildSecretWithToken is a Secret whose "token" key holds a fresh 32-byte
// random token.
func buildSecretWithToken(dc *cachev1alpha1.DiskCache, name, component string) (*corev1.Secret, error) {
	tok, err := newToken()
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: objectMeta(dc, name, component),
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{cachev1alpha1.TokenKey: []byte(tok)},
	}, nil
}

// servicePorts are the data port and the health port (which the
// ServiceMonitor scrapes through the client Service's endpoints).
func servicePorts() []corev1.ServicePort {
	return []corev1.ServicePort{{
		Name:       PortName,
		Protocol:   corev1.ProtocolTCP,
		Port:       Port,
		TargetPort: intstr.FromString(PortName),
	}, {
		Name:       HealthPortName,
		Protocol:   corev1.ProtocolTCP,
		Port:       HealthPort,
		TargetPort: intstr.FromString(HealthPortName),
	}}
}

// buildClientService is <name>: the ClusterIP Service clients use.
func buildClientService(dc *cachev1alpha1.DiskCache) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: objectMeta(dc, clientSvcName(dc), ComponentClientSvc),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selectorLabels(dc),
			Ports:    servicePorts(),
		},
	}
}

// buildPeerService is <name>-peers: the headless Service that gives each
// shard a stable DNS name, ready or not (shards find each other through it).
func buildPeerService(dc *cachev1alpha1.DiskCache) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: objectMeta(dc, peerSvcName(dc), ComponentPeers),
		Spec: corev1.ServiceSpec{
			Type:                     corev1.ServiceTypeClusterIP,
			ClusterIP:                corev1.ClusterIPNone,
			PublishNotReadyAddresses: true,
			Selector:                 selectorLabels(dc),
			Ports:                    servicePorts(),
		},
	}
}

// buildPDB lets at most one shard be disrupted at a time.
func buildPDB(dc *cachev1alpha1.DiskCache) *policyv1.PodDisruptionBudget {
	one := intstr.FromInt32(1)
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: objectMeta(dc, pdbName(dc), ComponentServer),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: &one,
			Selector:       &metav1.LabelSelector{MatchLabels: selectorLabels(dc)},
		},
	}
}

// volumeClaimTemplate is the data volume of each shard.
func volumeClaimTemplate(dc *cachev1alpha1.DiskCache) corev1.PersistentVolumeClaim {
	return corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: DataVolume, Labels: labels(dc, ComponentServer)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: dc.Spec.Storage.StorageClassName,
			VolumeMode:       ptr.To(corev1.PersistentVolumeFilesystem),
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: *dc.Spec.Storage.Size},
			},
		},
	}
}

// buildStatefulSet is the set of cache servers, one pod per shard. image is
// the cacheserver image; configHash the hash of the start-up settings;
// peerCA says the TLS Secret has a ca.crt, which the shards then trust when
// they forward to each other.
// existingClaims are the volumeClaimTemplates of the StatefulSet if it
// exists already: they are immutable, so they are kept as they are (volume
// growth is applied to the claims directly).
func buildStatefulSet(dc *cachev1alpha1.DiskCache, image, configHash string, peerCA bool, existingClaims []corev1.PersistentVolumeClaim) *appsv1.StatefulSet {
	spec := &dc.Spec
	podLabels := map[string]string{}
	maps.Copy(podLabels, spec.PodLabels)
	maps.Copy(podLabels, labels(dc, ComponentServer)) // ours win
	podAnnotations := map[string]string{}
	maps.Copy(podAnnotations, spec.PodAnnotations)
	podAnnotations[ConfigHashAnno] = configHash

	// The probes ask the health port, which --max-connections does not
	// bound: clients holding every data connection must not make the
	// kubelet restart a pod or take it out of its Services. It speaks TLS
	// when the data port does (the kubelet does not verify it).
	probeScheme := corev1.URISchemeHTTP
	if scheme(dc) == "https" {
		probeScheme = corev1.URISchemeHTTPS
	}
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromString(HealthPortName), Scheme: probeScheme,
			}},
			TimeoutSeconds:   3,
			PeriodSeconds:    period,
			SuccessThreshold: 1,
			FailureThreshold: failures,
		}
	}

	mounts := []corev1.VolumeMount{
		{Name: DataVolume, MountPath: DataMountPath},
		{Name: ConfigVolume, MountPath: ConfigDir, ReadOnly: true},
		{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true},
		{Name: TmpVolume, MountPath: "/tmp"},
	}
	volumes := []corev1.Volume{
		// One projected volume for the files under /etc/diskcache: nested
		// mounts into a read-only ConfigMap volume would need mount points
		// created inside it. The topology is only referenced by name, so
		// announcing a new one never touches the pod template.
		{Name: ConfigVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr.To[int32](0o444),
			Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: configMapName(dc)},
					Items:                []corev1.KeyToPath{{Key: ConfigKey, Path: ConfigKey}},
				}},
				{ConfigMap: &corev1.ConfigMapProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: topologyName(dc)},
					Items:                []corev1.KeyToPath{{Key: TopologyKey, Path: "topology/" + TopologyKey}},
				}},
				{Secret: &corev1.SecretProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: adminSecretName(dc)},
					Items: []corev1.KeyToPath{{Key: cachev1alpha1.TokenKey, Path: "admin/" + cachev1alpha1.TokenKey,
						Mode: ptr.To[int32](0o440)}},
				}},
			},
		}}},
		// The token the server needs, and the tokens of a rotation under
		// way when the Secret has them (token.next, token.previous: the
		// server reads them beside its token file).
		{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr.To[int32](0o440),
			Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: dc.TokenSecretName()},
					Items:                []corev1.KeyToPath{{Key: cachev1alpha1.TokenKey, Path: cachev1alpha1.TokenKey}},
				}},
				{Secret: &corev1.SecretProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: dc.TokenSecretName()},
					Items: []corev1.KeyToPath{
						{Key: cachev1alpha1.TokenNextKey, Path: cachev1alpha1.TokenNextKey},
						{Key: cachev1alpha1.TokenPreviousKey, Path: cachev1alpha1.TokenPreviousKey},
					},
					Optional: ptr.To(true),
				}},
			},
		}}},
		{Name: TmpVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			SizeLimit: ptr.To(resource.MustParse("64Mi")),
		}}},
	}
	if scheme(dc) == "https" {
		mounts = append(mounts, corev1.VolumeMount{Name: TLSVolume, MountPath: TLSDir, ReadOnly: true})
		// Only the key pair and the CA of the Secret (which may hold more),
		// ca.crt when it has one.
		ref := corev1.LocalObjectReference{Name: spec.TLS.SecretName}
		volumes = append(volumes, corev1.Volume{Name: TLSVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr.To[int32](0o440),
			Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{LocalObjectReference: ref, Items: []corev1.KeyToPath{
					{Key: corev1.TLSCertKey, Path: corev1.TLSCertKey},
					{Key: corev1.TLSPrivateKeyKey, Path: corev1.TLSPrivateKeyKey},
				}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: ref, Items: []corev1.KeyToPath{
					{Key: caKey, Path: caKey},
				}, Optional: ptr.To(true)}},
			},
		}}})
	}

	spread := make([]corev1.TopologySpreadConstraint, len(spec.TopologySpreadConstraints))
	for i, c := range spec.TopologySpreadConstraints {
		c = *c.DeepCopy()
		if c.LabelSelector == nil {
			c.LabelSelector = &metav1.LabelSelector{MatchLabels: selectorLabels(dc)}
		}
		spread[i] = c
	}
	if len(spread) == 0 {
		spread = nil
	}

	claims := existingClaims
	if len(claims) == 0 {
		claims = []corev1.PersistentVolumeClaim{volumeClaimTemplate(dc)}
	}

	args := []string{settings.FlagConfig.Arg(), ConfigPath, settings.FlagTopologyFile.Arg(), TopologyPath, settings.FlagAdminTokenFile.Arg(), AdminTokenPath}
	if scheme(dc) == "https" && peerCA {
		args = append(args, settings.FlagPeerCAFile.Arg(), TLSDir+"/"+caKey)
	}
	env := []corev1.EnvVar{{Name: settings.FlagShardIndex.Env(), ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['" + PodIndexLabel + "']"},
	}}}
	// The server sets its Go memory limit from the container's memory
	// limit. Only when the spec sets one: without a limit the downward
	// API answers the node's allocatable memory, which no shard should
	// size its heap by.
	if _, ok := spec.Resources.Limits[corev1.ResourceMemory]; ok {
		env = append(env, corev1.EnvVar{Name: settings.FlagMemoryLimit.Env(), ValueFrom: &corev1.EnvVarSource{
			ResourceFieldRef: &corev1.ResourceFieldSelector{
				ContainerName: ContainerName, Resource: "limits.memory", Divisor: resource.MustParse("1"),
			},
		}})
	}
	container := corev1.Container{
		Name:            ContainerName,
		Image:           image,
		ImagePullPolicy: spec.ImagePullPolicy,
		Command:         []string{BinaryPath},
		Args:            args,
		Env:             env,
		Ports: []corev1.ContainerPort{{
			Name: PortName, ContainerPort: Port, Protocol: corev1.ProtocolTCP,
		}, {
			Name: HealthPortName, ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP,
		}},
		Resources:      *spec.Resources.DeepCopy(),
		VolumeMounts:   mounts,
		StartupProbe:   probe("/healthz", 2, 150),
		LivenessProbe:  probe("/healthz", 10, 3),
		ReadinessProbe: probe("/readyz", 5, 2),
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To(RunAsID),
			RunAsGroup:               ptr.To(RunAsID),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Privileged:               ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}

	return &appsv1.StatefulSet{
		ObjectMeta: objectMeta(dc, stsName(dc), ComponentServer),
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(spec.Shards),
			Selector:            &metav1.LabelSelector{MatchLabels: selectorLabels(dc)},
			ServiceName:         peerSvcName(dc),
			PodManagementPolicy: appsv1.ParallelPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: appsv1.PersistentVolumeClaimRetentionPolicyType(spec.Storage.PVCRetentionPolicy.WhenDeleted),
				WhenScaled:  appsv1.PersistentVolumeClaimRetentionPolicyType(spec.Storage.PVCRetentionPolicy.WhenScaled),
			},
			VolumeClaimTemplates: claims,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnnotations},
				Spec: corev1.PodSpec{
					Containers:                    []corev1.Container{container},
					ImagePullSecrets:              spec.ImagePullSecrets,
					Volumes:                       volumes,
					AutomountServiceAccountToken:  ptr.To(false),
					EnableServiceLinks:            ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:        ptr.To(true),
						RunAsUser:           ptr.To(RunAsID),
						RunAsGroup:          ptr.To(RunAsID),
						FSGroup:             ptr.To(RunAsID),
						FSGroupChangePolicy: ptr.To(corev1.FSGroupChangeOnRootMismatch),
						SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					NodeSelector:              spec.NodeSelector,
					Tolerations:               spec.Tolerations,
					Affinity:                  spec.Affinity,
					TopologySpreadConstraints: spread,
					PriorityClassName:         spec.PriorityClassName,
				},
			},
		},
	}
}

// tokenSecretOf is the token Secret a StatefulSet's pods mount ("" when
// none is found).
func tokenSecretOf(sts *appsv1.StatefulSet) string {
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Name != TokenVolume || v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.Secret != nil {
				return src.Secret.Name
			}
		}
	}
	return ""
}
