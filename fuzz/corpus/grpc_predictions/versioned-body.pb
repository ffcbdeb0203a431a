
mnist2.0
body‰PNG"seq-1