// Browser side of the sample service.
import { retry } from "./retry.js";

export class ApiClient {
  constructor(baseUrl) {
    this.baseUrl = baseUrl;
  }

  async health() {
    return retry(() => fetch(this.baseUrl + "/health"), 3);
  }
}

export const formatStatus = (status) => `service is ${status}`;

function logStatus(client) {
  client.health().then((r) => console.log(formatStatus(r.status)));
}
