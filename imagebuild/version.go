package main

import (
	"context"
	"io"

	"deskhost/internal/buildinfo"
)

func init() {
	commands["version"] = command{"print the build (module version, VCS revision)", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
		buildinfo.Print(stdout, "imagebuild")
		return nil
	}}
}
