// The etcd WAL segment reader and writer live here.
