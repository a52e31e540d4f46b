// A Java service holding or asking for a lock with Curator's InterProcessMutex, driven
// line by line over stdin/stdout by tests/backends/zookeeper/test_zookeeper_curator.py.
//
//   java -cp '.services/curator/libs/*' scripts/curator/LockProbe.java HOSTS PATH
//
// Commands (one per line):  acquire MILLIS   ->  "acquired" | "timeout"
//                           release          ->  "released"
//                           holder           ->  the lock's participant nodes, in order
//                           quit
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.ExponentialBackoffRetry;

public class LockProbe {
    public static void main(String[] args) throws Exception {
        CuratorFramework client = CuratorFrameworkFactory.newClient(
                args[0], 10000, 5000, new ExponentialBackoffRetry(100, 3));
        client.start();
        client.blockUntilConnected(20, TimeUnit.SECONDS);
        InterProcessMutex mutex = new InterProcessMutex(client, args[1]);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        System.out.println("ready");
        System.out.flush();
        String line;
        while ((line = in.readLine()) != null) {
            String[] words = line.trim().split(" ");
            String reply;
            switch (words[0]) {
                case "acquire":
                    boolean got = mutex.acquire(Long.parseLong(words[1]), TimeUnit.MILLISECONDS);
                    reply = got ? "acquired" : "timeout";
                    break;
                case "release":
                    mutex.release();
                    reply = "released";
                    break;
                case "holder":
                    reply = String.join(",", mutex.getParticipantNodes());
                    break;
                case "quit":
                    client.close();
                    return;
                default:
                    reply = "unknown command " + words[0];
            }
            System.out.println(reply);
            System.out.flush();
        }
        client.close();
    }
}
