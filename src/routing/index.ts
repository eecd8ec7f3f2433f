export { pickRoundRobin } from './balancer.js';
