package cri

// PauseImageBlobs are the manifest, config and layer of the pause image
// EnsurePauseImage makes from the executable's bytes pause (OCI media
// types; the layer uncompressed): the same image for a registry, as the
// benchmarks give it to containerd's CRI.
func PauseImageBlobs(pause []byte) (manifest, config, layer []byte, err error) {
	img, err := buildPauseImage(pause)
	if err != nil {
		return nil, nil, nil, err
	}
	return img.manifest, img.config, img.layer, nil
}
