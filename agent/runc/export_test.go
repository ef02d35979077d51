package runc

// SetRemoveDir makes r remove exec scratch directories with f.
func SetRemoveDir(r *Runner, f func(string) error) { r.removeDirFn = f }
