package io.fluid.minidfs;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

import sun.misc.Signal;

/**
 * One NameNode and one DataNode on 127.0.0.1, for tests that talk HDFS natively.
 *
 * <pre>
 *   Main [--no-stdin] DATA_DIR [NAMENODE_PORT [NAMENODE_HTTP_PORT]]
 * </pre>
 *
 * NAMENODE_PORT defaults to 9820; NAMENODE_HTTP_PORT to 0 (any free port; the chosen one is logged).
 * Prints exactly {@code MINIDFS READY hdfs://127.0.0.1:PORT} on stdout once a client can write, then
 * runs until stdin closes (unless --no-stdin) or the process gets SIGTERM/SIGINT, and shuts the
 * cluster down. Hadoop's own logging goes to stderr.
 */
public final class Main {
  private static final String HOST = "127.0.0.1";

  public static void main(String[] args) throws Exception {
    boolean watchStdin = true;
    List<String> positional = new ArrayList<>();
    for (String a : args) {
      if (a.equals("--no-stdin")) {
        watchStdin = false;
      } else if (a.startsWith("-")) {
        usage("unknown option " + a);
      } else {
        positional.add(a);
      }
    }
    if (positional.isEmpty() || positional.size() > 3) {
      usage("expected DATA_DIR [NAMENODE_PORT [NAMENODE_HTTP_PORT]]");
    }
    File base = new File(positional.get(0)).getAbsoluteFile();
    int port = positional.size() > 1 ? Integer.parseInt(positional.get(1)) : 9820;
    int httpPort = positional.size() > 2 ? Integer.parseInt(positional.get(2)) : 0;

    Configuration conf = new HdfsConfiguration();
    // Any local user may read and write everything.
    conf.setBoolean("dfs.permissions.enabled", false);
    conf.set("hadoop.security.authentication", "simple");
    // Everything on loopback. The DataNode registers as 127.0.0.1, and the NameNode hands that
    // address (ipAddr:xferPort) to clients, so no name resolution is involved either way.
    conf.set("dfs.namenode.rpc-address", HOST + ":" + port);
    conf.set("dfs.namenode.http-address", HOST + ":" + httpPort);
    conf.set("dfs.datanode.hostname", HOST);
    conf.set("dfs.datanode.address", HOST + ":0");
    conf.set("dfs.datanode.ipc.address", HOST + ":0");
    conf.set("dfs.datanode.http.address", HOST + ":0");
    conf.setBoolean("dfs.client.use.datanode.hostname", false);
    conf.setBoolean("dfs.datanode.use.datanode.hostname", false);
    conf.setBoolean("dfs.namenode.datanode.registration.ip-hostname-check", false);
    // One DataNode: one replica, and never refuse it for load.
    conf.setInt("dfs.replication", 1);
    conf.setBoolean("dfs.namenode.redundancy.considerLoad", false);
    // Let tests use small block sizes to get multi-block files cheaply.
    conf.setLong("dfs.namenode.fs-limits.min-block-size", 0);
    // Quick heartbeats and reports, no safe-mode wait.
    conf.setLong("dfs.heartbeat.interval", 1);
    // A DataNode is declared dead after 2 * recheck + 10 * heartbeat = 40 s without heartbeats.
    conf.setInt("dfs.namenode.heartbeat.recheck-interval", 15000);
    conf.setLong("dfs.blockreport.initialDelay", 0);
    conf.setInt("dfs.namenode.safemode.extension", 0);
    conf.setLong("dfs.namenode.safemode.min.datanodes", 0);
    // Keep it small.
    conf.setInt("dfs.namenode.handler.count", 10);
    conf.setInt("dfs.datanode.handler.count", 5);
    conf.setBoolean("dfs.webhdfs.enabled", true);

    MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf, base)
        .nameNodePort(port)
        .nameNodeHttpPort(httpPort)
        .numDataNodes(1)
        .storagesPerDatanode(1)
        .checkDataNodeAddrConfig(true)
        .checkDataNodeHostConfig(true)
        .format(true)
        .build();

    AtomicBoolean stopped = new AtomicBoolean(false);
    Runnable stop = () -> {
      if (stopped.compareAndSet(false, true)) {
        System.err.println("minidfs: shutting down");
        try {
          cluster.shutdown();
        } catch (Throwable t) {
          t.printStackTrace();
        }
        System.err.println("minidfs: stopped");
      }
    };
    // SIGTERM/SIGINT and stdin EOF release this latch; the main thread then shuts the cluster down
    // before the JVM starts exiting (Hadoop's own shutdown hooks misbehave when the cluster is
    // stopped from inside a JVM shutdown hook). The JVM hook stays as a last resort.
    CountDownLatch quit = new CountDownLatch(1);
    for (String name : new String[] {"TERM", "INT"}) {
      Signal.handle(new Signal(name), sig -> {
        System.err.println("minidfs: got SIG" + sig.getName());
        quit.countDown();
      });
    }
    Runtime.getRuntime().addShutdownHook(new Thread(stop, "minidfs-shutdown"));

    cluster.waitActive();
    cluster.waitClusterUp();
    while (cluster.getNameNode().isInSafeMode()) {
      Thread.sleep(100);
    }
    probe(cluster.getFileSystem());

    System.err.println("minidfs: NameNode rpc " + cluster.getNameNode().getNameNodeAddress()
        + ", http " + cluster.getNameNode().getHttpAddress()
        + "; DataNode " + cluster.getDataNodes().get(0).getDatanodeId());
    System.out.println("MINIDFS READY hdfs://" + HOST + ":" + port);
    System.out.flush();

    if (watchStdin) {
      Thread watcher = new Thread(() -> {
        try {
          InputStream in = System.in;
          byte[] buf = new byte[256];
          while (in.read(buf) >= 0) {
            // Discard; only EOF matters.
          }
        } catch (IOException e) {
          // Treat a broken stdin like a closed one.
        }
        System.err.println("minidfs: stdin closed");
        quit.countDown();
      }, "minidfs-stdin");
      watcher.setDaemon(true);
      watcher.start();
    }
    quit.await();
    stop.run();
    System.exit(0);
  }

  /** Writes, reads back and deletes a small file, so READY means a client can store blocks. */
  private static void probe(FileSystem fs) throws IOException {
    Path p = new Path("/.minidfs-probe");
    byte[] data = "minidfs".getBytes(StandardCharsets.UTF_8);
    try (FSDataOutputStream out = fs.create(p, true)) {
      out.write(data);
    }
    byte[] back = new byte[data.length];
    try (FSDataInputStream in = fs.open(p)) {
      in.readFully(0, back);
    }
    if (!java.util.Arrays.equals(data, back)) {
      throw new IOException("minidfs: probe read back different bytes");
    }
    fs.delete(p, false);
  }

  private static void usage(String why) {
    System.err.println("minidfs: " + why);
    System.err.println(
        "usage: Main [--no-stdin] DATA_DIR [NAMENODE_PORT [NAMENODE_HTTP_PORT]]");
    System.exit(2);
  }
}
