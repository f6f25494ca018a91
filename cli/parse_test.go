package cli

import (
	"fmt"
	"io"
)

// parseCommandLine checks that args (without "cellnode") name a command
// and that its flags and arguments parse, without running it.
func parseCommandLine(args []string) error {
	root := newRoot(&env{stdout: io.Discard, stderr: io.Discard})
	root.InitDefaultCompletionCmd()
	c, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if c == root {
		return fmt.Errorf("no such command: %v", args)
	}
	if err := c.ParseFlags(rest); err != nil {
		return err
	}
	if c.Args != nil {
		return c.Args(c, c.Flags().Args())
	}
	return nil
}
